"""Wiring of `sessionwatch apply`: settings -> sinks -> the apply loop (storage/applier.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

from producers.errors import ConfigError
from sessionwatch.shutdown import install_stop_handlers
from storage.applier import Applier, ApplyOptions
from storage.sinks import Sink

log = logging.getLogger("sessionwatch.apply")

DEFAULT_LIFETIME_S = 43_200  # ASVS 4 V3.3.2 L2: 12 h absolute, as session.timeouts


def tenant_lifetimes(policy_path: str) -> tuple[int, dict[str, int]]:
    """Each tenant's absolute session lifetime from the policy (session.timeouts absolute_s)."""
    if not policy_path:
        return DEFAULT_LIFETIME_S, {}
    from streams.detectors.timeouts import Timeouts
    from streams.policy_file import load_policy

    policy = load_policy(policy_path)
    default = int(policy.default.params(Timeouts).absolute_s)
    return default, {t: int(tp.params(Timeouts).absolute_s) for t, tp in policy.tenants.items()}


def build_sinks(settings: Any) -> list[Sink]:
    sinks: list[Sink] = []
    if settings.redis:
        from storage.redis_applier import RedisSink

        if settings.revocation_ttl_s:
            default, per_tenant = int(settings.revocation_ttl_s), {}
        else:
            default, per_tenant = tenant_lifetimes(settings.policy)
        sinks.append(RedisSink(settings.redis, default, per_tenant))
    if settings.webhook_url:
        from storage.webhook import WebhookSink

        sinks.append(WebhookSink(settings.webhook_url, settings.webhook_secret.reveal()))
    if settings.caep_receivers:
        sinks.append(_caep_sink(settings))
    if not sinks:
        raise ConfigError("no sink configured; give --redis (SESSIONWATCH_REDIS), "
                          "--webhook-url or --caep-receivers")
    return sinks


def _caep_sink(settings: Any) -> Sink:
    from storage.caep import CaepPushSink, CaepReceiver, SetSigner

    receivers = [
        CaepReceiver(url=url, audience=settings.caep_audience or _origin(url),
                     bearer_token=settings.caep_token.reveal() or None)
        for url in settings.caep_receiver_urls
    ]
    return CaepPushSink(SetSigner(settings.caep_key), settings.caep_issuer, receivers)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def run_apply(settings: Any) -> int:
    sinks = build_sinks(settings)
    options = ApplyOptions(bootstrap=settings.bootstrap, group=settings.apply_group,
                           security=settings.kafka_security)
    return asyncio.run(_main(settings, options, sinks))


async def _main(settings: Any, options: ApplyOptions, sinks: list[Sink]) -> int:
    from producers.contract import DEADLETTER_TOPIC, REVOCATIONS_TOPIC
    from streams.topics import ensure_topics

    # The endpoint first: a taken metrics port stops the applier before Kafka is waited for.
    applier, server = _observed_applier(settings, options, sinks)
    try:
        # The topics must exist before the groups subscribe (auto-creation is off in production).
        await asyncio.to_thread(ensure_topics, settings.bootstrap_servers, settings.partitions,
                                settings.replication, app_id=settings.app_id,
                                security=settings.kafka_security)
    except BaseException:
        if server is not None:
            server.stop()
        raise
    install_stop_handlers(applier.stop, "apply", loop=asyncio.get_running_loop())
    runner = None
    if settings.caep_port:
        runner = await _serve_transmitter(settings)
    log.info("apply: %s -> %s", REVOCATIONS_TOPIC, ", ".join(s.name for s in sinks))
    log.info("apply: refused revocations go to %s", DEADLETTER_TOPIC)
    try:
        await applier.run()
    finally:
        if runner is not None:
            await runner.cleanup()
        if server is not None:
            server.stop()
    return 0


def _observed_applier(settings: Any, options: ApplyOptions, sinks: list[Sink]) -> tuple[Applier, Any]:
    """The applier, with its metrics and health endpoint when metrics_port is set. Ready when
    every sink's consumer has joined its group and no sink is unavailable."""
    if not settings.metrics_port:
        return Applier(options, sinks), None
    from prometheus_client import CollectorRegistry

    from sessionwatch.metrics import ApplierMetrics
    from sessionwatch.observability import Health
    from sessionwatch.run_observe import serve_metrics

    metrics = ApplierMetrics(CollectorRegistry())
    health = Health()
    applier = Applier(options, sinks, metrics=metrics, heartbeat=health.beat)

    def joined() -> tuple[bool, str]:
        waiting = [s.name for s in sinks if s.name not in applier.joined]
        return not waiting, f"waiting for partitions: {', '.join(waiting)}" if waiting else \
            f"{len(sinks)} sink group(s) joined"

    def available() -> tuple[bool, str]:
        down = [name for name, s in applier.stats.items() if s.unavailable_since is not None]
        return not down, f"unavailable (retrying): {', '.join(down)}" if down else "all available"

    health.add_check("sinks joined", joined)
    health.add_check("sinks available", available)
    return applier, serve_metrics(settings, metrics.registry, health)


async def _serve_transmitter(settings: Any) -> Any:
    from aiohttp import web

    from storage.caep import SetSigner, transmitter_app

    runner = web.AppRunner(transmitter_app(SetSigner(settings.caep_key), settings.caep_issuer))
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.caep_port).start()  # noqa: S104 - a service
    log.info("apply: SSF transmitter metadata and JWKS on port %d (receivers discover them from "
             "the issuer %s)", settings.caep_port, settings.caep_issuer)
    return runner
