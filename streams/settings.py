"""One typed, frozen settings object per process, built once from flags and `SESSIONWATCH_*` env.

Library code never reads the environment; the CLI builds `Settings` and passes it down. Every
field has an environment variable named `SESSIONWATCH_<FIELD>` (upper case) and a CLI flag
`--<field>` (dashes), flags winning. Errors name the field and say what is allowed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from producers.errors import ConfigError
from producers.kafka_options import KafkaSecurity

ENV_PREFIX = "SESSIONWATCH_"
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


@dataclass(frozen=True)
class Secret:
    """A secret setting: prints as *** in reprs and logs; `reveal()` where it is used."""

    _value: str = field(default="", repr=False)

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__

STORES = ("memory", "rocksdb")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Settings:
    # Kafka bootstrap servers, comma separated host:port pairs.
    bootstrap: str = "127.0.0.1:9092"
    # Consumer group / application id: workers with the same id share the partitions.
    app_id: str = "sessionwatch"
    # Partitions of sessionwatch.events when the worker creates it (= max parallel workers).
    partitions: int = 4
    replication: int = 1
    # Where stage state lives: "memory" (tests, demo; rebuilt from the changelog at start) or
    # "rocksdb" (production: survives restarts on local disk, under data_dir/state).
    store: str = "memory"
    data_dir: Path = Path(".sessionwatch")
    # GeoIP files; empty means the bundled (old) data. Point these at current mmdb files.
    city_db: str = ""
    asn_db: str = ""
    # The policy file (YAML or TOML, see examples/policy.yaml); empty means built-in defaults.
    policy: str = ""
    # The learned score's artefact directory (`sessionwatch train --out DIR`); empty: the
    # session.anomaly detector is off. Verified at start; SIGHUP or a changed model.json reloads.
    model: str = ""
    # A session idle this long (event time) is forgotten: its state is treated as absent and swept
    # from the store. Keep it above the apps' absolute session lifetime (ASVS: 4-12 h).
    session_ttl_s: float = 86400.0
    # How late (event time) an event may reach the user and source stages, behind the newest one
    # they have seen, and still be decided exactly as if everything had arrived in order. Those
    # stages merge partitions whose interleaving varies; see README "Order independence".
    allowed_lateness_s: float = 60.0
    # How often input offsets are committed (a checkpoint: outputs and state changes confirmed
    # first). Longer = less overhead, more reprocessing after a crash.
    commit_interval_s: float = 1.0
    # How long a fetch may wait for data. Tansu holds every fetch this long even when data
    # arrives, so it bounds event->revocation latency.
    fetch_max_wait_ms: int = 20
    # Consumer-group timeouts. Tansu holds a JoinGroup for about half the session timeout, so
    # short values make workers start fast; 6 s is the least Kafka allows by default.
    session_timeout_s: float = 6.0
    # How long a member may go between polls (librdkafka max.poll.interval.ms, at least 60 s).
    rebalance_timeout_s: float = 60.0
    log_level: str = "info"
    # "text" (time LEVEL logger: message) or "json" (one object per line: README "Metrics,
    # health and logs").
    log_format: str = "text"
    # /metrics, /healthz, /readyz of this process (sessionwatch/observability.py). 0 = off: a
    # default port would clash as soon as two processes run on one machine (tests, a second
    # worker), so each deployment names its own (docker-compose.yml: 9464..9467).
    metrics_port: int = 0
    # Loopback unless the operator says otherwise (compose: 0.0.0.0, for Prometheus's container).
    metrics_host: str = "127.0.0.1"

    # -- a secured Kafka (every process that talks to it; producers/kafka_options.py) --
    # PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (managed Kafka: SASL_SSL or SSL with mTLS).
    kafka_security_protocol: str = "PLAINTEXT"
    # TLS: the CA bundle (PEM) the brokers' certificates are verified with; empty = the system's.
    kafka_ssl_cafile: str = ""
    # mTLS: this client's certificate and private key (PEM).
    kafka_ssl_certfile: str = ""
    kafka_ssl_keyfile: str = ""
    # SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, and the credentials.
    kafka_sasl_mechanism: str = ""
    kafka_sasl_username: str = ""
    kafka_sasl_password: Secret = Secret()

    # -- the applier (`sessionwatch apply`) --
    # Redis holding the revocation keys and the apps' session stores (redis://, rediss://,
    # unix://). Empty: no Redis sink.
    redis: str = ""
    # Consumer groups are <apply_group>-redis, -webhook, -caep (one per sink).
    apply_group: str = "sessionwatch-apply"
    # TTL of revoked-session keys; 0 = each tenant's absolute session lifetime from the policy
    # (session.timeouts absolute_s, 12 h by default): a revoked session outlives no longer.
    revocation_ttl_s: float = 0.0
    # Webhook: every revocation POSTed as JSON, signed with HMAC-SHA256 (Sessionwatch-Signature).
    webhook_url: str = ""
    webhook_secret: Secret = Secret()
    # OpenID Shared Signals: CAEP session-revoked SETs pushed (RFC 8935) to these receivers,
    # comma-separated URLs, signed with the PEM key `caep_key` (EC P-256 -> ES256, RSA -> RS256).
    caep_receivers: str = ""
    caep_key: str = ""
    # `iss` of the SETs; also where receivers find the JWKS (<issuer>/jwks.json).
    caep_issuer: str = ""
    # `aud` of the SETs; empty = each receiver's origin (scheme://host[:port]).
    caep_audience: str = ""
    # Sent as `Authorization: Bearer ...` to every receiver, if set.
    caep_token: Secret = Secret()
    # Serve /jwks.json and /.well-known/ssf-configuration on this port (0 = off).
    caep_port: int = 0

    # -- the archiver (`sessionwatch archive`) --
    # A ClickHouse server (clickhouse://host:9000/sessionwatch; clickhouses:// for TLS) or an
    # embedded chDB directory: exactly one.
    clickhouse: str = ""
    clickhouse_user: str = "default"
    clickhouse_password: Secret = Secret()
    # TLS: the CA bundle to verify the server with (empty: the system's).
    clickhouse_ca_certs: str = ""
    chdb_dir: str = ""
    archive_group: str = "sessionwatch-archive"
    # Rows per insert (or 1 s of traffic, whichever comes first).
    archive_batch_rows: int = 50_000
    # Days the archive keeps a tenant's rows (0 = forever); per tenant: "bank=30,shop=365".
    archive_retention_days: int = 0
    archive_tenant_retention: str = ""
    # Privacy: archive addresses truncated to /24 (IPv4) and /48 (IPv6): 0 = off, 1 = on.
    archive_truncate_ip: int = 0

    # -- the operator console (`sessionwatch console`) --
    # host:port to serve on. Loopback by default: the console can end any user's session.
    # Another address needs console_allow_remote = 1 and a TLS proxy in front (cookies go Secure).
    console_listen: str = "127.0.0.1:8080"
    console_allow_remote: int = 0
    # TOML file of accounts with argon2 password hashes (`sessionwatch console-hash`).
    console_accounts: str = ""
    # Bearer token for automation (the responder role): at least 32 characters.
    console_token: Secret = Secret()
    # The tenant of the console's own session events (it emits them like any app).
    console_tenant: str = "sessionwatch-console"
    # Sign-in with an OpenID Connect provider (authorization code + PKCE, a confidential client).
    # The issuer's https URL (http only on loopback); empty: OIDC off.
    console_oidc_issuer: str = ""
    console_oidc_client_id: str = ""
    console_oidc_client_secret: Secret = Secret()
    # The ID token claim holding the user's groups (a list of strings, or one string).
    console_oidc_roles_claim: str = "groups"
    # Comma-separated group names (values of the roles claim) mapped to the console's roles; a
    # user in a responder group is a responder, else in a viewer group a viewer, else refused.
    console_oidc_responders: str = ""
    console_oidc_viewers: str = ""
    # The console's external base URL (https://console.example.com); the provider redirects back
    # to <console_public_url>/signin/oidc/callback. Required with OIDC.
    console_public_url: str = ""

    def __post_init__(self) -> None:
        for host in self.bootstrap.split(","):
            _check_host_port("bootstrap", host.strip())
        if self.store not in STORES:
            raise ConfigError(f"store: {self.store!r} is not one of {', '.join(STORES)}")
        for name in ("partitions", "replication", "fetch_max_wait_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be a positive whole number")
        for name in ("session_timeout_s", "rebalance_timeout_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1 second")
        if self.session_ttl_s < 60:
            raise ConfigError("session_ttl_s: must be at least 60 seconds")
        if self.allowed_lateness_s < 0:
            raise ConfigError("allowed_lateness_s: 0 or more seconds")
        if self.commit_interval_s <= 0:
            raise ConfigError("commit_interval_s: must be a positive number of seconds")
        if self.log_level.lower() not in LOG_LEVELS:
            raise ConfigError(
                f"log_level: {self.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
            )
        self._check_observability()
        _ = self.kafka_security  # KafkaSecurity checks itself, naming the SESSIONWATCH_KAFKA_* variable
        self._check_applier()
        self._check_archiver()
        self._check_console()
        if self.model and not (Path(self.model) / "model.json").is_file():
            raise ConfigError(f"model: {self.model!r} has no model.json; give the directory "
                              "`sessionwatch train --out DIR` wrote, or leave it empty")
        for name in ("city_db", "asn_db"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"{name}: no such file {path!r}; give a path or leave it empty")

    def _check_observability(self) -> None:
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"{_env('log_format')}: {self.log_format!r} is not one of "
                              f"{', '.join(LOG_FORMATS)}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"{_env('metrics_port')}: {self.metrics_port} is not 0 (off) or a "
                              "TCP port (1-65535)")
        host = self.metrics_host.strip("[]")
        if not host:
            raise ConfigError(f"{_env('metrics_host')}: empty; give an address to listen on "
                              "(127.0.0.1, or 0.0.0.0 for every interface)")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not all(p.replace("-", "").isalnum() for p in host.split(".")):
                raise ConfigError(f"{_env('metrics_host')}: {self.metrics_host!r} is not a host "
                                  "name or address") from None

    def _check_applier(self) -> None:
        if self.redis and not self.redis.startswith(REDIS_SCHEMES):
            raise ConfigError(f"redis: {self.redis!r} is not a Redis URL; use "
                              "redis://host:6379/0 (rediss:// for TLS, unix:///path.sock)")
        if self.revocation_ttl_s < 0:
            raise ConfigError("revocation_ttl_s: must be 0 (the tenant's session lifetime) or "
                              "a positive number of seconds")
        if self.webhook_url:
            if not self.webhook_url.startswith(("http://", "https://")):
                raise ConfigError(f"webhook_url: {self.webhook_url!r} is not an http(s) URL")
            if len(self.webhook_secret.reveal()) < 16:
                raise ConfigError("webhook_secret: required with webhook_url, at least 16 "
                                  "characters (e.g. `openssl rand -hex 32`)")
        for url in self.caep_receiver_urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"caep_receivers: {url!r} is not an http(s) URL")
        if self.caep_receivers or self.caep_port:
            if not self.caep_key:
                raise ConfigError("caep_key: required with caep_receivers/caep_port; make one "
                                  "with `sessionwatch caep-key --out caep.pem`")
            if not Path(self.caep_key).is_file():
                raise ConfigError(f"caep_key: no such file {self.caep_key!r}")
            if not self.caep_issuer.startswith(("http://", "https://")):
                raise ConfigError("caep_issuer: required with caep_receivers/caep_port, the "
                                  "https URL receivers know this transmitter by")
        if not 0 <= self.caep_port <= 65535:
            raise ConfigError("caep_port: must be 0 (off) or a TCP port")

    def _check_console(self) -> None:
        _check_host_port("console_listen", self.console_listen)
        if self.console_allow_remote not in (0, 1):
            raise ConfigError("console_allow_remote: 0 (loopback only) or 1")
        if self.console_token and len(self.console_token.reveal()) < 32:
            raise ConfigError("console_token (SESSIONWATCH_CONSOLE_TOKEN): at least 32 characters; "
                              "make one with `openssl rand -hex 32`")
        if self.console_accounts and not Path(self.console_accounts).is_file():
            raise ConfigError(f"console_accounts: no such file {self.console_accounts!r}; write "
                              "one as README 'The console' shows, hashes from "
                              "`sessionwatch console-hash`")
        self._check_console_oidc()

    def _check_console_oidc(self) -> None:
        if self.console_public_url:
            _check_web_url("console_public_url", self.console_public_url)
        if not self.console_oidc_issuer:
            given = [name for name in ("console_oidc_client_id", "console_oidc_client_secret",
                                       "console_oidc_responders", "console_oidc_viewers")
                     if getattr(self, name)]
            if given:
                raise ConfigError(f"{_env(given[0])}: set without SESSIONWATCH_CONSOLE_OIDC_ISSUER; "
                                  "give the provider's issuer URL too, or unset it")
            return
        _check_web_url("console_oidc_issuer", self.console_oidc_issuer)
        if not self.console_oidc_client_id:
            raise ConfigError(f"{_env('console_oidc_client_id')}: required with an OIDC issuer; the "
                              "client id the provider gave the console")
        if not self.console_oidc_client_secret:
            raise ConfigError(f"{_env('console_oidc_client_secret')}: required with an OIDC issuer; "
                              "the console is a confidential client (client_secret_basic)")
        if not self.console_public_url:
            raise ConfigError(f"{_env('console_public_url')}: required with an OIDC issuer; the "
                              "console's external base URL (the provider redirects back to "
                              "<url>/signin/oidc/callback)")
        if not self.console_oidc_roles_claim.strip():
            raise ConfigError(f"{_env('console_oidc_roles_claim')}: the ID token claim with the "
                              "user's groups (default groups); it cannot be empty")
        responders, viewers = self.console_oidc_responder_groups, self.console_oidc_viewer_groups
        if not responders and not viewers:
            raise ConfigError(f"{_env('console_oidc_responders')}, {_env('console_oidc_viewers')}: "
                              "give at least one group, or nobody could sign in with OIDC")
        both = sorted(responders & viewers)
        if both:
            raise ConfigError(f"{_env('console_oidc_responders')}, {_env('console_oidc_viewers')}: "
                              f"{', '.join(both)} in both; give each group one role")

    @property
    def console_oidc_responder_groups(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.console_oidc_responders.split(",") if g.strip())

    @property
    def console_oidc_viewer_groups(self) -> frozenset[str]:
        return frozenset(g.strip() for g in self.console_oidc_viewers.split(",") if g.strip())

    def _check_archiver(self) -> None:
        if self.clickhouse and not self.clickhouse.startswith(("clickhouse://", "clickhouses://")):
            raise ConfigError(f"clickhouse: {self.clickhouse!r} is not a ClickHouse URL; use "
                              "clickhouse://host:9000/sessionwatch (clickhouses:// for TLS)")
        if self.clickhouse and self.chdb_dir:
            raise ConfigError("clickhouse, chdb_dir: give one archive, not both")
        if self.clickhouse_ca_certs and not Path(self.clickhouse_ca_certs).is_file():
            raise ConfigError(f"clickhouse_ca_certs: no such file {self.clickhouse_ca_certs!r}")
        if self.archive_batch_rows < 1:
            raise ConfigError("archive_batch_rows: must be a positive whole number")
        if self.archive_retention_days < 0:
            raise ConfigError("archive_retention_days: 0 (keep everything) or a number of days")
        from storage.retention import parse_tenant_retention

        parse_tenant_retention(self.archive_tenant_retention)
        if self.archive_truncate_ip not in (0, 1):
            raise ConfigError("archive_truncate_ip: 0 (off) or 1 (on)")

    @property
    def caep_receiver_urls(self) -> list[str]:
        return [u.strip() for u in self.caep_receivers.split(",") if u.strip()]

    @property
    def kafka_security(self) -> KafkaSecurity:
        """How every client of this process reaches the brokers (TLS, mTLS, SASL)."""
        return KafkaSecurity(
            protocol=self.kafka_security_protocol, cafile=self.kafka_ssl_cafile,
            certfile=self.kafka_ssl_certfile, keyfile=self.kafka_ssl_keyfile,
            sasl_mechanism=self.kafka_sasl_mechanism, username=self.kafka_sasl_username,
            password=self.kafka_sasl_password.reveal())

    @property
    def bootstrap_servers(self) -> list[str]:
        return [h.strip() for h in self.bootstrap.split(",")]

    @classmethod
    def load(cls, env: Mapping[str, str], **flags: Any) -> Settings:
        """Defaults, overridden by `SESSIONWATCH_*` variables in `env`, overridden by flags.

        Flags that are None were not given. Unknown SESSIONWATCH_ variables are an error, so a
        typo does not silently leave a default in place.
        """
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for var, raw in env.items():
            if not var.startswith(ENV_PREFIX) or var in _NOT_SETTINGS:
                continue
            name = var[len(ENV_PREFIX):].lower()
            if name not in known:
                raise ConfigError(
                    f"{var}: not a sessionwatch setting; known: "
                    + ", ".join(ENV_PREFIX + n.upper() for n in known)
                )
            values[name] = _convert(var, known[name], raw)
        for name, value in flags.items():
            if value is None:
                continue
            if name not in known:
                raise ConfigError(f"--{name.replace('_', '-')}: not a sessionwatch setting")
            values[name] = _convert(f"--{name.replace('_', '-')}", known[name], value)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# Variables with the prefix that belong to the SDK/demo, not to the worker's Settings.
_NOT_SETTINGS = frozenset({"SESSIONWATCH_HASH_KEY", "SESSIONWATCH_HASH_KEY_ID"})


def _convert(where: str, field: dataclasses.Field[Any], raw: Any) -> Any:
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            value = float(raw)
            if not math.isfinite(value):  # nan would slip past every range check in Settings
                raise ValueError(raw)
            return value
        if kind == "Path":
            return Path(raw)
        if kind == "Secret":
            return raw if isinstance(raw, Secret) else Secret(str(raw))
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {raw!r} is not a valid {kind}") from None


def _env(name: str) -> str:
    return f"{name} ({ENV_PREFIX}{name.upper()})"


def _check_web_url(name: str, value: str) -> None:
    """https, or http to a loopback host (a provider or console on this machine)."""
    parts = urlsplit(value)
    host = parts.hostname or ""
    ok = parts.scheme == "https" or (parts.scheme == "http" and _loopback(host))
    if not ok or not host or parts.query or parts.fragment:
        raise ConfigError(f"{_env(name)}: {value!r} is not an https URL (http only for a loopback "
                          "host), without query or fragment")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_host_port(name: str, value: str) -> None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: {value!r} is not host:port (e.g. 127.0.0.1:9092)")
    if host.startswith("["):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not all(part.replace("-", "").replace("_", "").isalnum() for part in host.split(".")):
            raise ConfigError(f"{name}: {host!r} is not a host name or address") from None
