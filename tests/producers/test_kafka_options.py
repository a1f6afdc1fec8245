"""The one place that spells Kafka client options: every protocol x mechanism through the three
builders, checked against what each client library really accepts, and KafkaSecurity's errors.

SASL is tested here only: the embedded broker (Tansu 0.6) offers SCRAM but cannot hold a SCRAM
user (README "Secured Kafka")."""

from __future__ import annotations

import asyncio
import inspect
import ssl
from pathlib import Path

import pytest
from confluent_kafka import Producer as RdProducer

from producers.errors import ConfigError
from producers.kafka_options import (
    MECHANISMS,
    KafkaSecurity,
    aiokafka_options,
    kafka_python_options,
    librdkafka_options,
    preflight,
)

CASES = [("PLAINTEXT", ""), ("SSL", ""),
         *[(p, m) for p in ("SASL_PLAINTEXT", "SASL_SSL") for m in MECHANISMS]]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory):
    from integration.tls import make_pki

    return make_pki(tmp_path_factory.mktemp("pki"))


def security_for(protocol: str, mechanism: str, pki, *, mtls: bool = True) -> KafkaSecurity:
    tls = protocol in ("SSL", "SASL_SSL")
    sasl = protocol.startswith("SASL_")
    return KafkaSecurity(
        protocol=protocol, cafile=str(pki.ca) if tls else "",
        certfile=str(pki.client_cert) if tls and mtls else "",
        keyfile=str(pki.client_key) if tls and mtls else "",
        sasl_mechanism=mechanism, username="svc-sessionwatch" if sasl else "",
        password="pa55-w0rd-s3cret" if sasl else "")


@pytest.mark.parametrize(("protocol", "mechanism"), CASES)
def test_kafka_python_options(protocol, mechanism, pki):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

    security = security_for(protocol, mechanism, pki)
    options = kafka_python_options(security)
    assert options["security_protocol"] == protocol
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(options) <= set(client.DEFAULT_CONFIG), client.__name__
    if security.tls:
        assert options["ssl_cafile"] == str(pki.ca) and options["ssl_check_hostname"] is True
        assert (options["ssl_certfile"], options["ssl_keyfile"]) == (str(pki.client_cert),
                                                                      str(pki.client_key))
    else:
        assert not any(k.startswith("ssl_") for k in options)
    if security.sasl:
        assert (options["sasl_mechanism"], options["sasl_plain_username"],
                options["sasl_plain_password"]) == (mechanism, "svc-sessionwatch", "pa55-w0rd-s3cret")
    else:
        assert not any(k.startswith("sasl_") for k in options)


@pytest.mark.parametrize(("protocol", "mechanism"), CASES)
def test_aiokafka_options(protocol, mechanism, pki):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    security = security_for(protocol, mechanism, pki)
    options = aiokafka_options(security)
    assert options["security_protocol"] == protocol
    for client in (AIOKafkaProducer, AIOKafkaConsumer):
        assert set(options) <= set(inspect.signature(client.__init__).parameters), client.__name__
    if security.tls:
        context = options["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    else:
        assert "ssl_context" not in options
    if security.sasl:
        assert options["sasl_mechanism"] == mechanism
        assert options["sasl_plain_password"] == "pa55-w0rd-s3cret"
    # aiokafka checks the combination itself when a client is built (no connection yet)

    async def build() -> None:
        await AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **options).stop()

    asyncio.run(build())


@pytest.mark.parametrize(("protocol", "mechanism"), CASES)
def test_librdkafka_options(protocol, mechanism, pki):
    security = security_for(protocol, mechanism, pki)
    options = librdkafka_options(security)
    assert options["security.protocol"] == protocol.lower()
    if security.tls:
        assert options["ssl.ca.location"] == str(pki.ca)
        assert options["ssl.endpoint.identification.algorithm"] == "https"
        assert options["ssl.certificate.location"] == str(pki.client_cert)
        assert options["ssl.key.location"] == str(pki.client_key)
    if security.sasl:
        assert (options["sasl.mechanism"], options["sasl.username"],
                options["sasl.password"]) == (mechanism, "svc-sessionwatch", "pa55-w0rd-s3cret")
    # librdkafka validates every property name and value (and loads the files) at construction
    RdProducer({"bootstrap.servers": "127.0.0.1:1", **options}).flush(0)


def test_quix_accepts_the_librdkafka_options(pki):
    from quixstreams.kafka.configuration import ConnectionConfig

    security = security_for("SASL_SSL", "SCRAM-SHA-512", pki)
    config = ConnectionConfig.from_librdkafka_dict({"bootstrap.servers": "k:9093",
                                                    **librdkafka_options(security)})
    assert config.as_librdkafka_dict()["sasl.password"] == "pa55-w0rd-s3cret"
    assert "pa55" not in repr(config)


def test_tls_without_a_ca_file_uses_the_system_cas():
    security = KafkaSecurity(protocol="SSL")
    assert librdkafka_options(security)["ssl.ca.location"] == "probe"
    assert kafka_python_options(security)["ssl_cafile"] is None
    assert aiokafka_options(security)["ssl_context"].cert_store_stats()["x509_ca"] >= 0


def test_none_is_plaintext():
    assert kafka_python_options(None) == {"security_protocol": "PLAINTEXT"}
    assert aiokafka_options(None) == {"security_protocol": "PLAINTEXT"}
    assert librdkafka_options(None) == {"security.protocol": "plaintext"}


def test_protocol_and_mechanism_are_case_insensitive():
    security = KafkaSecurity(protocol="sasl_ssl", sasl_mechanism="scram-sha-256", username="u",
                             password="p")
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert security.tls and security.sasl


def test_the_password_is_never_printed():
    security = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="PLAIN", username="u",
                             password="hunter2-secret")
    assert "hunter2" not in repr(security) and "hunter2" not in str(security)


@pytest.mark.parametrize(("kwargs", "variable", "hint"), [
    ({"protocol": "TLS"}, "SESSIONWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
    ({"cafile": "/x"}, "SESSIONWATCH_KAFKA_SSL_CAFILE", "does not use TLS"),
    ({"protocol": "SSL", "cafile": "/no/such/ca.pem"}, "SESSIONWATCH_KAFKA_SSL_CAFILE", "no such file"),
    ({"protocol": "SSL", "keyfile": "CA"}, "SESSIONWATCH_KAFKA_SSL_KEYFILE",
     "SESSIONWATCH_KAFKA_SSL_CERTFILE"),
    ({"protocol": "SSL", "certfile": "CLIENT"}, "SESSIONWATCH_KAFKA_SSL_KEYFILE", "private key"),
    ({"protocol": "SASL_SSL", "username": "u", "password": "p"},
     "SESSIONWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER", "username": "u", "password": "p"},
     "SESSIONWATCH_KAFKA_SASL_MECHANISM", "PLAIN"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "password": "p"},
     "SESSIONWATCH_KAFKA_SASL_USERNAME", "required"),
    ({"protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "username": "u"},
     "SESSIONWATCH_KAFKA_SASL_PASSWORD", "required"),
    ({"protocol": "SSL", "username": "u"}, "SESSIONWATCH_KAFKA_SASL_USERNAME", "SASL_SSL"),
])
def test_errors_name_the_variable_and_say_what_to_do(kwargs, variable, hint, pki):
    files = {"CA": str(pki.ca), "CLIENT": str(pki.client_cert)}
    kwargs = {k: files.get(v, v) for k, v in kwargs.items()}
    with pytest.raises(ConfigError) as caught:
        KafkaSecurity(**kwargs)
    message = str(caught.value)
    assert message.startswith(variable) and hint in message


def test_a_combined_pem_needs_no_key_file(pki, tmp_path: Path):
    both = tmp_path / "client-with-key.pem"
    both.write_text(Path(pki.client_cert).read_text() + Path(pki.client_key).read_text())
    security = KafkaSecurity(protocol="SSL", cafile=str(pki.ca), certfile=str(both))
    assert librdkafka_options(security)["ssl.key.location"] == str(both)


def test_a_bad_ca_file_is_named(tmp_path: Path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match="SESSIONWATCH_KAFKA_SSL_CAFILE"):
        aiokafka_options(KafkaSecurity(protocol="SSL", cafile=str(bad)))


def test_from_env():
    env = {"SESSIONWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "SESSIONWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
           "SESSIONWATCH_KAFKA_SASL_USERNAME": "app", "SESSIONWATCH_KAFKA_SASL_PASSWORD": "pw"}
    assert KafkaSecurity.from_env(env) == KafkaSecurity(
        protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username="app", password="pw")
    assert KafkaSecurity.from_env({}) == KafkaSecurity()


def test_preflight_skips_plaintext_protocols():
    # nothing listens on port 1: only a TLS protocol is probed
    preflight("127.0.0.1:1", KafkaSecurity())
    preflight("127.0.0.1:1", KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                                           username="u", password="p"))
