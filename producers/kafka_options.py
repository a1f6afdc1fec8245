"""How every sessionwatch Kafka client connects to a secured broker (TLS, mTLS, SASL): one
`KafkaSecurity`, one option builder per client library, and a pre-flight that fails fast.

The builders are the only place that spells client options, so kafka-python, aiokafka and
librdkafka (confluent-kafka, Quix Streams) cannot drift apart. Errors name the
`SESSIONWATCH_KAFKA_*` variable and say what to do.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from producers.errors import ConfigError, SessionwatchError

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# OAUTHBEARER is left out: each client needs its own token-provider callback, not a setting.
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

PROTOCOL_VAR = "SESSIONWATCH_KAFKA_SECURITY_PROTOCOL"
CAFILE_VAR = "SESSIONWATCH_KAFKA_SSL_CAFILE"
CERTFILE_VAR = "SESSIONWATCH_KAFKA_SSL_CERTFILE"
KEYFILE_VAR = "SESSIONWATCH_KAFKA_SSL_KEYFILE"
MECHANISM_VAR = "SESSIONWATCH_KAFKA_SASL_MECHANISM"
USERNAME_VAR = "SESSIONWATCH_KAFKA_SASL_USERNAME"
PASSWORD_VAR = "SESSIONWATCH_KAFKA_SASL_PASSWORD"
BOOTSTRAP_VAR = "SESSIONWATCH_BOOTSTRAP"

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH / _IP_ADDRESS_MISMATCH: the chain is trusted, the name is not.
_NAME_MISMATCH = (62, 64)


class KafkaConnectError(SessionwatchError):
    """The pre-flight could not talk to the broker the way the settings say; the message says why."""


@dataclass(frozen=True)
class KafkaSecurity:
    """How to reach the brokers. Empty file settings mean "not used" (an empty CA file: the
    system's CA certificates). The password never appears in a repr."""

    protocol: str = "PLAINTEXT"
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    sasl_mechanism: str = ""
    username: str = ""
    password: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        protocol = self.protocol.strip().upper()
        mechanism = self.sasl_mechanism.strip().upper()
        object.__setattr__(self, "protocol", protocol)
        object.__setattr__(self, "sasl_mechanism", mechanism)
        if protocol not in PROTOCOLS:
            raise ConfigError(f"{PROTOCOL_VAR}: {self.protocol!r} is not one of "
                              f"{', '.join(PROTOCOLS)}")
        self._check_tls()
        self._check_sasl()

    def _check_tls(self) -> None:
        given = [var for var, value in ((CAFILE_VAR, self.cafile), (CERTFILE_VAR, self.certfile),
                                        (KEYFILE_VAR, self.keyfile)) if value]
        if given and not self.tls:
            raise ConfigError(f"{given[0]}: set, but {PROTOCOL_VAR} is {self.protocol}, which does "
                              "not use TLS; set it to SSL or SASL_SSL, or unset the file")
        for var, path in ((CAFILE_VAR, self.cafile), (CERTFILE_VAR, self.certfile),
                          (KEYFILE_VAR, self.keyfile)):
            if path and not Path(path).is_file():
                raise ConfigError(f"{var}: no such file {path!r}; give the path of a PEM file")
        if self.keyfile and not self.certfile:
            raise ConfigError(f"{KEYFILE_VAR}: set without {CERTFILE_VAR}; give the client "
                              "certificate (PEM) too, or unset the key")
        # A PEM holding both certificate and key is fine; a separate certificate needs its key.
        if self.certfile and not self.keyfile and "PRIVATE KEY" not in _head(self.certfile):
            raise ConfigError(f"{KEYFILE_VAR}: required with {CERTFILE_VAR} (mTLS): the client "
                              "certificate's private key, PEM")

    def _check_sasl(self) -> None:
        given = [var for var, value in ((MECHANISM_VAR, self.sasl_mechanism),
                                        (USERNAME_VAR, self.username),
                                        (PASSWORD_VAR, self.password)) if value]
        if not self.sasl:
            if given:
                raise ConfigError(f"{given[0]}: set, but {PROTOCOL_VAR} is {self.protocol}, which "
                                  "does not use SASL; set it to SASL_SSL (or SASL_PLAINTEXT), or "
                                  "unset the SASL settings")
            return
        if self.sasl_mechanism not in MECHANISMS:
            what = repr(self.sasl_mechanism) if self.sasl_mechanism else "not set"
            raise ConfigError(f"{MECHANISM_VAR}: {what}; with {self.protocol} give one of "
                              f"{', '.join(MECHANISMS)} (MSK and Confluent Cloud: SCRAM-SHA-512 / "
                              "PLAIN)")
        if not self.username:
            raise ConfigError(f"{USERNAME_VAR}: required with {self.protocol}; the SASL user name")
        if not self.password:
            raise ConfigError(f"{PASSWORD_VAR}: required with {self.protocol}; the SASL user's "
                              "password (or API secret)")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> KafkaSecurity:
        """From the `SESSIONWATCH_KAFKA_*` variables in `env` (for apps that configure the SDK
        from their environment, as the sessionwatch processes do)."""
        return cls(protocol=env.get(PROTOCOL_VAR, "") or "PLAINTEXT",
                   cafile=env.get(CAFILE_VAR, ""), certfile=env.get(CERTFILE_VAR, ""),
                   keyfile=env.get(KEYFILE_VAR, ""), sasl_mechanism=env.get(MECHANISM_VAR, ""),
                   username=env.get(USERNAME_VAR, ""), password=env.get(PASSWORD_VAR, ""))


PLAINTEXT = KafkaSecurity()


def _head(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")[:65536]
    except OSError:
        return ""


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """The TLS context of aiokafka and of the pre-flight: verify the chain and the host name."""
    try:
        context = ssl.create_default_context(cafile=security.cafile or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"{CAFILE_VAR}: {security.cafile!r} is not a readable PEM CA bundle "
                          f"({exc}); give the CA certificate that signed the brokers'") from None
    if security.certfile:
        try:
            context.load_cert_chain(security.certfile, security.keyfile or None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"{CERTFILE_VAR}, {KEYFILE_VAR}: cannot load the client certificate "
                              f"and key ({exc}); give a PEM certificate and its unencrypted "
                              "private key") from None
    return context


def kafka_python_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
    security = security or PLAINTEXT
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        options["ssl_check_hostname"] = True
        # Without a CA file kafka-python's context loads the system's default CAs.
        options["ssl_cafile"] = security.cafile or None
        if security.certfile:
            options["ssl_certfile"] = security.certfile
            options["ssl_keyfile"] = security.keyfile or None
    if security.sasl:
        options.update(sasl_mechanism=security.sasl_mechanism,
                       sasl_plain_username=security.username,
                       sasl_plain_password=security.password)
    return options


def aiokafka_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """Keyword arguments for aiokafka's AIOKafkaProducer / AIOKafkaConsumer."""
    security = security or PLAINTEXT
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.tls:
        # What aiokafka.helpers.create_ssl_context builds, from the same function as the pre-flight.
        options["ssl_context"] = ssl_context(security)
    if security.sasl:
        options.update(sasl_mechanism=security.sasl_mechanism,
                       sasl_plain_username=security.username,
                       sasl_plain_password=security.password)
    return options


def librdkafka_options(security: KafkaSecurity | None) -> dict[str, Any]:
    """Configuration entries for librdkafka (confluent-kafka, Quix Streams' broker address)."""
    security = security or PLAINTEXT
    options: dict[str, Any] = {"security.protocol": security.protocol.lower()}
    if security.tls:
        # The wheels link OpenSSL statically: "probe" finds the system's CAs when no file is given.
        options["ssl.ca.location"] = security.cafile or "probe"
        options["ssl.endpoint.identification.algorithm"] = "https"
        if security.certfile:
            options["ssl.certificate.location"] = security.certfile
            options["ssl.key.location"] = security.keyfile or security.certfile
    if security.sasl:
        options.update({"sasl.mechanism": security.sasl_mechanism,
                        "sasl.username": security.username, "sasl.password": security.password})
    return options


def preflight(bootstrap_servers: str | Sequence[str], security: KafkaSecurity,
              timeout_s: float = 5.0) -> None:
    """Check, before any client starts, that each bootstrap broker completes a verified TLS
    handshake and answers a Kafka request; `KafkaConnectError` saying which setting to fix.

    The clients would otherwise retry a wrong CA forever (librdkafka), time out after 30 s
    (kafka-python) or fail with a vague error (aiokafka). Only TLS protocols are checked: a
    trust or certificate problem fails at once; brokers that cannot be reached fail only when
    none can be (a cluster with one broker down still starts).
    """
    if not security.tls:
        return
    servers = ([s.strip() for s in bootstrap_servers.split(",")]
               if isinstance(bootstrap_servers, str) else list(bootstrap_servers))
    context = ssl_context(security)
    unreachable: list[str] = []
    for server in servers:
        host, _, port = server.rpartition(":")
        host = host.strip("[]")
        try:
            _probe(context, host, int(port), timeout_s)
            return
        except _Unreachable as exc:
            unreachable.append(f"{server} ({exc})")
        except ssl.SSLCertVerificationError as exc:
            raise KafkaConnectError(_verify_message(server, host, exc, security)) from None
        except (ssl.SSLError, _Closed) as exc:
            raise KafkaConnectError(_refused_message(server, exc, security)) from None
    raise KafkaConnectError(f"no broker answers: {'; '.join(unreachable)}; check {BOOTSTRAP_VAR} "
                            "(host:port of the brokers' TLS listener)")


class _Unreachable(Exception):
    pass


class _Closed(Exception):
    pass


def _probe(context: ssl.SSLContext, host: str, port: int, timeout_s: float) -> None:
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except OSError as exc:
        raise _Unreachable(exc.strerror or type(exc).__name__) from None
    with raw:
        try:
            tls = context.wrap_socket(raw, server_hostname=host)
        except TimeoutError:
            raise _Unreachable(f"no TLS handshake within {timeout_s:g} s: a plaintext listener?") from None
        except (ConnectionResetError, BrokenPipeError):
            raise _Closed("connection reset during the handshake") from None
        with tls:
            # ApiVersions v0 (allowed before SASL). TLS 1.3 reports a refused client certificate
            # only on the first read, so read the reply's size.
            body = struct.pack(">hhih", 18, 0, 1, 9) + b"preflight"
            try:
                tls.sendall(struct.pack(">i", len(body)) + body)
                reply = tls.recv(4)
            except TimeoutError:
                raise _Unreachable(f"no Kafka answer within {timeout_s:g} s") from None
            except (ConnectionResetError, BrokenPipeError):
                raise _Closed("connection reset after the handshake") from None
            if len(reply) != 4:
                raise _Closed("connection closed after the handshake")


def _verify_message(server: str, host: str, exc: ssl.SSLCertVerificationError,
                    security: KafkaSecurity) -> str:
    reason = exc.verify_message or exc.reason or str(exc)
    if exc.verify_code in _NAME_MISMATCH:
        return (f"{server}: the broker's certificate is trusted but does not name {host} "
                f"({reason}); connect by a name or address in its subjectAltName ({BOOTSTRAP_VAR} "
                "and the brokers' advertised listeners), or reissue the certificate with it")
    ca = repr(security.cafile) if security.cafile else "not set, so the system's CAs"
    return (f"{server}: the broker's certificate is not trusted ({reason}); "
            f"{CAFILE_VAR} is {ca}: give the CA certificate (PEM) that signed the brokers' "
            "certificates")


def _refused_message(server: str, exc: Exception, security: KafkaSecurity) -> str:
    reason = getattr(exc, "reason", None) or str(exc)
    if "WRONG_VERSION_NUMBER" in str(reason) or "record layer" in str(reason).lower():
        return (f"{server}: this listener does not speak TLS ({reason}); {PROTOCOL_VAR} is "
                f"{security.protocol}: point {BOOTSTRAP_VAR} at the TLS listener, or use a "
                "plaintext protocol")
    if not security.certfile:
        return (f"{server}: the broker refused the TLS connection ({reason}); it probably requires "
                f"a client certificate (mTLS): set {CERTFILE_VAR} and {KEYFILE_VAR}")
    return (f"{server}: the broker refused the client certificate ({reason}); check that "
            f"{CERTFILE_VAR} is signed by a CA the broker trusts and {KEYFILE_VAR} is its key")
