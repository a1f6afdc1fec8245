"""The metrics and health endpoint of a long-running process: `/metrics`, `/healthz`, `/readyz`.

    health = Health(max_age_s=30)               # the loop calls health.beat() on every pass
    health.add_check("owns partitions", lambda: (bool(assignment), f"{len(assignment)} assigned"))
    server = start(port, registry=registry, health=health)   # 127.0.0.1 unless told otherwise
    ...
    server.stop()

A stdlib `ThreadingHTTPServer` in a daemon thread rather than prometheus_client's
`start_http_server`: that one answers the registry on every path and has no place for health
routes; here `/metrics`, `/healthz` and `/readyz` are the only routes (anything else is a 404),
and `stop()` shuts the socket down deterministically (tests, graceful shutdown).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from sessionwatch.logs import redact_text

log = logging.getLogger("sessionwatch.observability")

# A check answers ok, or (ok, why); it is called on every /readyz request, in the server's
# thread: it must be cheap and not block (read a flag or a timestamp the process loop keeps).
Check = Callable[[], "bool | tuple[bool, str]"]


class Health:
    """Liveness from a heartbeat, readiness from named checks the process registers."""

    def __init__(self, max_age_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age_s = max_age_s
        self.clock = clock
        self._last_beat = clock()  # starting counts as a beat: alive until max_age_s passes
        self._checks: dict[str, Check] = {}
        self._lock = threading.Lock()

    def beat(self) -> None:
        """The process loop is turning: call it on every pass (cheap: one clock read)."""
        self._last_beat = self.clock()

    def add_check(self, name: str, check: Check) -> None:
        with self._lock:
            self._checks[name] = check

    def alive(self) -> tuple[bool, float]:
        age = self.clock() - self._last_beat
        return age <= self.max_age_s, age

    def ready(self) -> tuple[bool, list[dict[str, Any]]]:
        alive, age = self.alive()
        results = [{"name": "alive", "ok": alive,
                    "detail": f"last heartbeat {age:.1f} s ago (bound {self.max_age_s:g} s)"}]
        with self._lock:
            checks = list(self._checks.items())
        for name, check in checks:
            try:
                answer = check()
                ok, detail = answer if isinstance(answer, tuple) else (bool(answer), "")
            except Exception as exc:  # a broken check says so; it does not take the server down
                ok, detail = False, f"check raised {type(exc).__name__}: {exc}"
            # Details may quote a URL or an error from a client library: no credentials out.
            results.append({"name": name, "ok": bool(ok), "detail": redact_text(str(detail))[:500]})
        return all(r["ok"] for r in results), results


def caught_up(lag_s: Callable[[], float | None], bound_s: float) -> Check:
    """A check: the process's own measure of how far behind it is (seconds), within a bound.
    `lag_s` returning None means "not measured yet": not ready."""

    def check() -> tuple[bool, str]:
        lag = lag_s()
        if lag is None:
            return False, "not measured yet"
        return lag <= bound_s, f"{lag:.1f} s behind (bound {bound_s:g} s)"

    return check


class ObservabilityServer:
    def __init__(self, host: str, port: int, registry: CollectorRegistry, health: Health) -> None:
        self.registry = registry
        self.health = health
        handler = type("_Handler", (_Handler,), {"owner": self})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        address = self.httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="observability",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ObservabilityServer:
        self._thread.start()
        log.info("metrics and health on %s (/metrics, /healthz, /readyz)", self.url)
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)


def start(port: int, host: str = "127.0.0.1", *, registry: CollectorRegistry | None = None,
          health: Health | None = None) -> ObservabilityServer:
    """Serve the process's registry and health on host:port (port 0: any free port, see
    `.port`). Raises OSError naming the address when the port is taken."""
    try:
        server = ObservabilityServer(host, port, registry or CollectorRegistry(), health or Health())
    except OSError as exc:
        raise OSError(exc.errno, f"--metrics-port / SESSIONWATCH_METRICS_PORT: cannot listen on "
                                 f"{host}:{port} ({exc.strerror}); pick a free port") from exc
    return server.start()


class _Handler(BaseHTTPRequestHandler):
    owner: ObservabilityServer
    server_version = "sessionwatch"
    sys_version = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(send_body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            # Prometheus's Accept header picks text or OpenMetrics, as prometheus_client's own server.
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, content_type, encoder(self.owner.registry), send_body)
        elif path == "/healthz":
            alive, age = self.owner.health.alive()
            body = {"alive": alive, "heartbeat_age_s": round(age, 3),
                    "bound_s": self.owner.health.max_age_s}
            self._json(200 if alive else 503, body, send_body)
        elif path == "/readyz":
            ready, checks = self.owner.health.ready()
            self._json(200 if ready else 503, {"ready": ready, "checks": checks}, send_body)
        else:
            self._json(404, {"error": "not found: /metrics, /healthz and /readyz only"}, send_body)

    def _json(self, status: int, body: dict[str, Any], send_body: bool) -> None:
        self._send(status, "application/json", json.dumps(body).encode() + b"\n", send_body)

    def _send(self, status: int, content_type: str, body: bytes, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # A scrape every 15 s is not news; errors still go through log_error -> debug.
        pass

    def log_error(self, format: str, *args: Any) -> None:
        log.debug("observability: " + format, *args)
