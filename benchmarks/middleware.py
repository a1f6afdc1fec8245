"""What the Flask middleware costs per request: the same app with and without it, on a real Redis.

    python -m benchmarks.middleware [--redis redis://127.0.0.1:6379/15] [--requests 5000]

Both apps use Flask-Session in that Redis (one GET and one SET per request already); the
protected one adds the revocation check (one pipelined MGET) and emits `session.activity`
through the real SDK, whose Kafka producer is replaced by one that drops the bytes: what the
request thread pays is the emit call (validation, encoding, a queue put), not delivery, which
happens on the SDK's own thread. Requests go through Flask's test client (no sockets), so the
difference is the middleware's own cost. Also times `Enforcer.check` alone. Flushes the Redis
database it is given: point it at a scratch one.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any


class _Sent:
    def add_callback(self, fn: Any) -> None:
        fn(None)

    def add_errback(self, fn: Any) -> None:
        pass


class _DropProducer:
    def send(self, topic: str, value: bytes, key: bytes) -> Any:
        return _Sent()

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _app(redis_url: str, protect: bool) -> Any:
    import redis
    from flask import Flask, jsonify, session
    from flask_session import Session

    from producers.client import SessionwatchClient
    from producers.flask import SessionWatch
    from producers.hashing import TokenHasher

    app = Flask(__name__)
    app.config.update(SECRET_KEY="bench", SESSION_TYPE="redis",
                      SESSION_REDIS=redis.Redis.from_url(redis_url))
    Session(app)
    sw = None
    if protect:
        client = SessionwatchClient("unused:9092", TokenHasher({"k": "b" * 32}),
                                    producer_factory=_DropProducer, buffer_size=1_000_000)
        sw = SessionWatch(app, client=client, redis=redis.Redis.from_url(redis_url))

    @app.post("/login")
    def login() -> Any:
        if sw is not None:
            sw.login("alice")
        else:
            session["user"] = "alice"
        return jsonify(ok=True)

    @app.get("/account")
    def account() -> Any:
        return jsonify(balance=1)

    return app


def _per_request_us(app: Any, n: int) -> list[float]:
    client = app.test_client()
    client.post("/login", environ_base={"REMOTE_ADDR": "73.162.10.20"})
    for _ in range(200):  # warm up
        client.get("/account", environ_base={"REMOTE_ADDR": "73.162.10.20"})
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        response = client.get("/account", environ_base={"REMOTE_ADDR": "73.162.10.20"})
        times.append((time.perf_counter() - t0) * 1e6)
        assert response.status_code == 200
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--requests", type=int, default=5000)
    args = parser.parse_args()
    import redis

    from producers.enforcement import Enforcer

    redis.Redis.from_url(args.redis).flushdb()
    results = {}
    for protect in (False, True, False, True):  # interleaved: machine noise hits both
        times = _per_request_us(_app(args.redis, protect), args.requests)
        results.setdefault(protect, []).extend(times)
    enforcer = Enforcer(redis.Redis.from_url(args.redis))
    check = []
    for _ in range(args.requests):
        t0 = time.perf_counter()
        enforcer.check(sessions=["a" * 64], user="alice", authenticated_at=1.0, ip="73.162.10.20")
        check.append((time.perf_counter() - t0) * 1e6)

    def row(name: str, xs: list[float]) -> str:
        xs = sorted(xs)
        return (f"{name:<32} p50 {statistics.median(xs):7.0f} µs   p99 "
                f"{xs[int(0.99 * len(xs))]:7.0f} µs   mean {statistics.fmean(xs):7.0f} µs")

    print(row("request, no middleware", results[False]))
    print(row("request, with middleware", results[True]))
    print(row("Enforcer.check alone", check))
    added = statistics.median(results[True]) - statistics.median(results[False])
    print(f"middleware adds {added:.0f} µs per request at the median "
          f"({len(results[True])} requests each, Redis at {args.redis})")
    redis.Redis.from_url(args.redis).flushdb()


if __name__ == "__main__":
    main()
