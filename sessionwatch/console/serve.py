"""`sessionwatch console`: settings -> archive, accounts, OIDC, live feed, publisher -> the app on
uvicorn. Refuses to start open: no accounts, no token and no OIDC provider is an error, and an
address other than loopback needs `console_allow_remote` (and then cookies are Secure: put TLS
in front)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

from producers.errors import ConfigError
from sessionwatch.shutdown import install_stop_handlers

log = logging.getLogger("sessionwatch.console")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_parts(settings: Any, *, use_broker: bool, hash_key: str | None = None) -> Any:
    """The app's parts from the settings; ConfigError naming the setting if one is wrong."""
    from producers.client import SessionwatchClient
    from producers.hashing import TokenHasher
    from sessionwatch.archive import open_archive
    from sessionwatch.console.accounts import load_accounts
    from sessionwatch.console.actions import RevocationPublisher
    from sessionwatch.console.app import ConsoleParts
    from sessionwatch.console.archive import SharedArchive
    from sessionwatch.console.live import LiveFeed, follow_archive, follow_broker
    from sessionwatch.console.oidc import OidcClient, OidcConfig
    from sessionwatch.console.own_events import OwnEvents
    from sessionwatch.console.security import Authenticator

    host, _, _port = settings.console_listen.rpartition(":")
    loopback = is_loopback(host)
    if not loopback and not settings.console_allow_remote:
        raise ConfigError(f"console_listen: {settings.console_listen!r} is not loopback; the console "
                          "can end any user's session, so serving it beyond this machine needs "
                          "SESSIONWATCH_CONSOLE_ALLOW_REMOTE=1 and a TLS proxy in front")
    accounts = load_accounts(settings.console_accounts) if settings.console_accounts else {}
    token = settings.console_token.reveal() or None
    oidc_config = OidcConfig.from_settings(settings)
    if not accounts and token is None and oidc_config is None:
        raise ConfigError("console_accounts, console_token, console_oidc_issuer: nobody could sign "
                          "in; give an accounts file (--accounts, SESSIONWATCH_CONSOLE_ACCOUNTS), a "
                          "token (SESSIONWATCH_CONSOLE_TOKEN) or an OIDC provider "
                          "(SESSIONWATCH_CONSOLE_OIDC_ISSUER and README 'Security model')")
    auth = Authenticator(accounts, token=token)
    archive = SharedArchive(open_archive(settings))
    archive.migrate()  # feedback and audit tables on an archive written before them
    feed = LiveFeed()
    publisher = own = None
    if use_broker:
        security = settings.kafka_security
        follow_broker(feed, settings.bootstrap, security)
        publisher = RevocationPublisher(settings.bootstrap, security=security)
        # The console's own sessions are events like any app's; a per-process key when none is
        # given (its sessions live in memory, so nothing needs to match across restarts).
        hasher = TokenHasher({"console": hash_key or secrets.token_hex(32)})
        own = OwnEvents(SessionwatchClient(settings.bootstrap, hasher,
                                           tenant=settings.console_tenant, security=security),
                        tenant=settings.console_tenant)
    else:
        follow_archive(feed, archive)
    return ConsoleParts(archive=archive, auth=auth, feed=feed, publisher=publisher, own_events=own,
                        # an https public URL: the browser is on TLS (a proxy), even on loopback
                        secure_cookies=not loopback or settings.console_public_url.startswith("https:"),
                        city_db=settings.city_db,
                        oidc=OidcClient(oidc_config) if oidc_config is not None else None)


def run_console(settings: Any, *, use_broker: bool, hash_key: str | None = None) -> int:
    import uvicorn

    from sessionwatch.console.app import create_app

    parts = build_parts(settings, use_broker=use_broker, hash_key=hash_key)
    stop_metrics = _observe(settings, parts)
    host, _, port = settings.console_listen.rpartition(":")
    log.info("console on http://%s:%s (archive %s, live feed from the %s, revocations by hand %s)",
             host, port, parts.archive.name, parts.feed.source,
             "on" if parts.publisher else "off: no --bootstrap")
    config = uvicorn.Config(create_app(parts), host=host.strip("[]"), port=int(port),
                            log_level=settings.log_level, access_log=False, server_header=False,
                            log_config=None,  # its lines go through ours (JSON, redaction)
                            timeout_graceful_shutdown=GRACEFUL_S)
    server = _server_class()(config)

    def stop() -> None:
        server.should_exit = True  # uvicorn's loop looks every 0.1 s
        parts.feed.close()         # open live streams end (the pages reconnect elsewhere)

    install_stop_handlers(stop, "console")
    try:
        server.run()
    finally:
        parts.feed.close()
        if parts.publisher is not None:
            parts.publisher.close()
        if parts.own_events is not None:
            parts.own_events.client.close()
        if stop_metrics is not None:
            stop_metrics()
        parts.archive.close()
    return 0


# A graceful stop waits this long for requests in flight, then cancels them: below the 30 s an
# orchestrator usually grants before SIGKILL, so the cleanup after uvicorn still runs.
GRACEFUL_S = 20


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server without its own signal handlers: ours (sessionwatch/shutdown.py)
        make a second SIGTERM exit at once, where uvicorn forces only on a second SIGINT and
        re-raises the signal after shutting down (skipping our cleanup and exiting -15)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server


# How often the metrics side asks the archive `SELECT 1` (readiness: the archive reachable).
PROBE_EVERY_S = 10.0


def _observe(settings: Any, parts: Any) -> Callable[[], None] | None:
    """Request metrics and /healthz, /readyz on the console's own metrics port (never on the
    console's port: a scrape must not need a sign-in, nor the console expose its metrics)."""
    if not settings.metrics_port:
        return None
    import threading

    from prometheus_client import CollectorRegistry

    from sessionwatch.metrics import ConsoleMetrics
    from sessionwatch.observability import Health
    from sessionwatch.run_observe import serve_metrics

    parts.metrics = ConsoleMetrics(CollectorRegistry())
    health = Health()
    parts.heartbeat = health.beat
    reachable = {"ok": False, "detail": "not probed yet"}
    stop = threading.Event()

    def probe() -> None:
        while True:
            try:
                parts.archive.query("SELECT 1")
                reachable.update(ok=True, detail=f"{parts.archive.name} answers")
            except Exception as exc:  # noqa: BLE001 - any failure: not reachable
                reachable.update(ok=False, detail=f"{type(exc).__name__}: {exc}")
            if stop.wait(PROBE_EVERY_S):
                return

    health.add_check("archive reachable", lambda: (reachable["ok"], reachable["detail"]))
    server = serve_metrics(settings, parts.metrics.registry, health)
    threading.Thread(target=probe, name="console-probe", daemon=True).start()

    def stop_all() -> None:
        stop.set()
        server.stop()

    return stop_all
