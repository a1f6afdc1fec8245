"""Real services for integration tests: the Tansu broker and `sessionwatch worker` processes.

Both are started once per test session on free loopback ports; nothing here is mocked.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from sessionwatch.broker import EmbeddedBroker
from sessionwatch.demo import wait_caught_up
from sessionwatch.processes import WorkerProcess


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def worker(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    where = tmp_path_factory.mktemp("worker")
    proc = WorkerProcess(broker.bootstrap, where / "worker.log", app_id="sessionwatch-it",
                         partitions=2, data_dir=str(where / "state"))
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def producer(broker: EmbeddedBroker) -> Producer:
    """A client we did not write (librdkafka), as a Go/Java team's producer would be."""
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 1})


def send(producer: Producer, events: list[dict | bytes], key: bytes | None = None) -> None:
    for event in events:
        if isinstance(event, bytes):
            producer.produce("sessionwatch.events", event, key=key or b"garbage")
        else:
            k = key or (event.get("session") or event.get("user") or event["ip"]).encode()
            producer.produce("sessionwatch.events", json.dumps(event).encode(), key=k)
    producer.flush(10)


def read_until(
    bootstrap: str,
    topics: list[str],
    done: Callable[[list[tuple[str, dict]]], bool],
    timeout_s: float = 30.0,
) -> list[tuple[str, dict]]:
    """Read `topics` from the beginning until `done(records)` holds or the deadline passes."""
    # Assigned, not subscribed: a group join costs seconds on Tansu and buys nothing here.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-{uuid.uuid4()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 10})
    metadata = consumer.list_topics(timeout=10)
    consumer.assign([
        TopicPartition(topic, p, OFFSET_BEGINNING)
        for topic in topics if topic in metadata.topics
        for p in metadata.topics[topic].partitions
    ])
    records: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is None or msg.error():
                if done(records):
                    return records
                continue
            try:
                value = json.loads(msg.value())
            except ValueError:  # the garbage a test sent on purpose
                value = {"raw": msg.value().decode("utf-8", "replace")}
            records.append((msg.topic(), value))
            if done(records):
                return records
        return records
    finally:
        consumer.close()


def caught_up(bootstrap: str, app_id: str = "sessionwatch-it") -> None:
    assert wait_caught_up(bootstrap, app_id, timeout_s=60), "the worker did not catch up"


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    """`check()`'s first truthy result, polled every 0.2 s; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def worker_log(worker: WorkerProcess) -> str:
    return Path(worker.log_path).read_text(errors="replace")


# Event times near now for everything the shared worker judges. State expires by event time,
# against the newest event time its partition has seen (Quix's TTL high-water): a worker that
# has seen the SDK's live events (now) treats sessions from the factories' fixed March date as
# long idle. One era per partition, as in production.
LIVE_T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def make_event(*args, **kw):
    """`factories.make_event` with one user per session (every test session logging in as alice
    would trip the concurrent-session limit across tests) and times from `LIVE_T0`."""
    from factories import make_event as factory

    kw.setdefault("user", "u-" + (kw.get("session") or "none")[:12])
    kw.setdefault("t0", LIVE_T0)
    return factory(*args, **kw)


class RedisServer:
    """A real redis-server on a loopback port, nothing persisted; can be stopped and restarted
    on the same port (outage tests). scripts/test.sh installs Debian's redis-server."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        import shutil

        from sessionwatch.broker import free_port

        self.binary = shutil.which("redis-server")
        if self.binary is None:
            pytest.fail("redis-server is not installed: run the tests through scripts/test.sh")
        self.port = port or free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        import redis

        log = open(self.log_dir / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 15
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.proc.kill()
                    pytest.fail(f"redis-server did not start on port {self.port}")
                time.sleep(0.05)
        client.close()
        return self

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server(redis_service: RedisServer):
    """A redis-py client of the session's redis-server."""
    client = redis_service.client()
    yield client
    client.close()


_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>{dir}/clickhouse-server.log</log>
        <errorlog>{dir}/clickhouse-server.err.log</errorlog>
        <size>20M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <tcp_port>{tcp_port}</tcp_port>
    <http_port>{http_port}</http_port>
    <!-- no interserver_http_port: nothing replicates, and 9009 may be taken -->
    <path>{dir}/data/</path>
    <tmp_path>{dir}/data/tmp/</tmp_path>
    <user_files_path>{dir}/data/user_files/</user_files_path>
    <format_schema_path>{dir}/data/format_schemas/</format_schema_path>
    <users_config>{dir}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <!-- not UTC on purpose: the archive must not depend on the server's zone -->
    <timezone>Europe/Berlin</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
    <mlock_executable>false</mlock_executable>
</yandex>
"""

_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <!-- an idle connection notices a shutdown after this many seconds (default 10) -->
            <poll_interval>1</poll_interval>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration><queries>0</queries><errors>0</errors>
                <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


class ClickHouseServer:
    """Debian's clickhouse-server (18.16) as an ordinary process: generated config.xml and
    users.xml, data and logs under `base_dir`, loopback ports. `stop()` or `kill()`, then
    `start()`, brings it back on the same ports and data (outage tests).
    scripts/test.sh installs the package."""

    def __init__(self, base_dir: Path) -> None:
        import shutil

        from sessionwatch.broker import free_port

        # /usr/sbin is not on every user's PATH.
        self.binary = (shutil.which("clickhouse-server")
                       or shutil.which("clickhouse-server", path="/usr/sbin:/usr/bin"))
        if self.binary is None:
            pytest.fail("clickhouse-server is not installed: run the tests through scripts/test.sh")
        self.base_dir = base_dir
        self.tcp_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.tcp_port:
            self.http_port = free_port()
        self.config = base_dir / "config.xml"
        self.config.write_text(_CLICKHOUSE_CONFIG.format(
            dir=base_dir, tcp_port=self.tcp_port, http_port=self.http_port))
        (base_dir / "users.xml").write_text(_CLICKHOUSE_USERS)
        self.log_path = base_dir / "clickhouse-server.log"
        self.url = f"clickhouse://127.0.0.1:{self.tcp_port}/sessionwatch"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ClickHouseServer:
        from clickhouse_driver import Client, errors

        out = open(self.base_dir / "stdout.log", "ab")  # noqa: SIM115
        # cwd: the server (and chDB) read a config.xml from the working directory.
        self.proc = subprocess.Popen([self.binary, f"--config-file={self.config}"],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=self.base_dir)
        out.close()
        client = Client("127.0.0.1", port=self.tcp_port, connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.execute("SELECT 1")
                    return self
                except (errors.Error, OSError, EOFError):
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.kill()
                        pytest.fail(f"clickhouse-server did not answer on 127.0.0.1:{self.tcp_port}"
                                    f" within {timeout_s:.0f} s; see {self.base_dir}/*.log:\n"
                                    + self._log_tail())
                    time.sleep(0.05)
        finally:
            client.disconnect()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Shut down cleanly (SIGTERM), or kill it if it takes longer than `timeout_s`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """Die like a crashed server (SIGKILL): no clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def _log_tail(self, lines: int = 20) -> str:
        texts = []
        for name in ("stdout.log", "clickhouse-server.err.log"):
            path = self.base_dir / name
            if path.exists():
                texts.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(texts)


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's chDB directory. chDB opens one directory per process: close a backend
    before opening another on a different path."""
    return str(tmp_path_factory.mktemp("chdb") / "archive")


@pytest.fixture
def server_backend(clickhouse_server: ClickHouseServer):
    """The session's ClickHouse server, migrated, for one test."""
    from storage.clickhouse import ServerBackend

    backend = ServerBackend(clickhouse_server.url)
    backend.migrate()
    yield backend
    backend.close()


@pytest.fixture
def chdb_backend(chdb_dir: str):
    """The session's chDB directory, migrated, for one test."""
    from storage.clickhouse import ChdbBackend

    backend = ChdbBackend(chdb_dir)
    backend.migrate()
    yield backend
    backend.close()  # chDB holds one directory per process: free it for the next test


def seeded_archives(seed: Callable[[Any], Any], name: str) -> tuple[Any, ...]:
    """Module fixtures for tests that read one seeded archive on both backends: `server_url`
    and `chdb_path` (seeded once per module by `seed(backend)`), `server` and `chdb` (a backend
    per test, closed after it: chDB holds one directory per process), and `backend`
    (parametrized over both). Assign them at module level:
    `server_url, chdb_path, server, chdb, backend = seeded_archives(seed, "name")`."""
    from storage.clickhouse import ChdbBackend, ServerBackend

    @pytest.fixture(scope="module")
    def server_url(clickhouse_server) -> str:
        backend = ServerBackend(clickhouse_server.url)
        try:
            seed(backend)
        finally:
            backend.close()
        return clickhouse_server.url

    @pytest.fixture(scope="module")
    def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> str:
        path = str(tmp_path_factory.mktemp(name) / "archive")
        backend = ChdbBackend(path)
        try:
            seed(backend)
        finally:
            backend.close()
        return path

    @pytest.fixture
    def server(server_url: str):
        backend = ServerBackend(server_url)
        yield backend
        backend.close()

    @pytest.fixture
    def chdb(chdb_path: str):
        backend = ChdbBackend(chdb_path)
        yield backend
        backend.close()

    @pytest.fixture(params=["clickhouse", "chdb"])
    def backend(request: pytest.FixtureRequest):
        return request.getfixturevalue("server" if request.param == "clickhouse" else "chdb")

    return server_url, chdb_path, server, chdb, backend
