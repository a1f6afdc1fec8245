"""`sessionwatch …`: the command line, and the one place that wires components together."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from producers.errors import SessionwatchError

log = logging.getLogger("sessionwatch")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that talks to the pipeline (all default to env/defaults)."""
    parser.add_argument("--bootstrap", help="Kafka host:port[,host:port] (SESSIONWATCH_BOOTSTRAP)")
    parser.add_argument("--partitions", type=int, help="partitions for new topics")
    parser.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    _observability_flags(parser)
    _kafka_flags(parser)


def _observability_flags(parser: argparse.ArgumentParser) -> None:
    """The long-running commands' /metrics, /healthz, /readyz and log format."""
    parser.add_argument("--metrics-port", dest="metrics_port", type=int,
                        help="serve /metrics, /healthz, /readyz here (SESSIONWATCH_METRICS_PORT; "
                             "default 0 = off)")
    parser.add_argument("--metrics-host", dest="metrics_host",
                        help="address of the metrics port (SESSIONWATCH_METRICS_HOST; default "
                             "127.0.0.1)")
    parser.add_argument("--log-format", dest="log_format", choices=("text", "json"),
                        help="log lines as text or JSON (SESSIONWATCH_LOG_FORMAT; default text)")


# Flags mirroring the SESSIONWATCH_KAFKA_* variables; the SASL password has none (a command line
# is visible to every user of the machine): SESSIONWATCH_KAFKA_SASL_PASSWORD only.
KAFKA_FLAGS = ("kafka_security_protocol", "kafka_ssl_cafile", "kafka_ssl_certfile",
               "kafka_ssl_keyfile", "kafka_sasl_mechanism", "kafka_sasl_username")


def _kafka_flags(parser: argparse.ArgumentParser) -> None:
    for name in KAFKA_FLAGS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name,
                            help=f"(SESSIONWATCH_{name.upper()}; README 'Secured Kafka')")


def kafka_preflight(settings: Any) -> None:
    """A TLS broker this process cannot verify (or that refuses it) stops it now, with the
    setting to fix, instead of clients retrying for ever (producers/kafka_options.py)."""
    if settings.kafka_security.tls:
        from producers.kafka_options import preflight

        preflight(settings.bootstrap_servers, settings.kafka_security)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sessionwatch",
        description="Catch hijacked web sessions and revoke them.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    broker = sub.add_parser("broker", help="run the embedded Kafka-wire broker (Tansu) here")
    broker.add_argument("--listen", default="127.0.0.1:9092", help="host:port to listen on")

    worker = sub.add_parser("worker", help="run the detection worker (Quix Streams)")
    _settings_flags(worker)
    worker.add_argument("--app-id", dest="app_id", help="consumer group / app id")
    worker.add_argument("--store", choices=("memory", "rocksdb"), help="state store")
    worker.add_argument("--data-dir", dest="data_dir", help="where rocksdb state lives")
    worker.add_argument("--allowed-lateness", dest="allowed_lateness_s", type=float,
                        help="seconds an event may arrive behind newer ones at the user and "
                             "source stages and still be decided in order (default 60)")
    worker.add_argument("--policy", help="policy file, YAML or TOML (SESSIONWATCH_POLICY)")
    worker.add_argument("--model", help="the learned score's artefact directory, from "
                                        "`sessionwatch train` (SESSIONWATCH_MODEL; default: off)")

    apply = sub.add_parser(
        "apply", help="deliver revocations to Redis (the apps' session stores), a webhook, CAEP")
    _settings_flags(apply)
    apply.add_argument("--redis", help="redis://host:6379/0 (SESSIONWATCH_REDIS)")
    apply.add_argument("--group", dest="apply_group", help="consumer group prefix")
    apply.add_argument("--policy", help="policy file: each tenant's session lifetime sets the "
                                        "TTL of revoked-session keys (SESSIONWATCH_POLICY)")
    apply.add_argument("--webhook-url", dest="webhook_url", help="POST every revocation here")
    apply.add_argument("--caep-receivers", dest="caep_receivers",
                       help="comma-separated CAEP push endpoints (RFC 8935)")
    apply.add_argument("--caep-key", dest="caep_key", help="PEM private key signing the SETs")
    apply.add_argument("--caep-issuer", dest="caep_issuer", help="`iss` of the SETs")
    apply.add_argument("--caep-port", dest="caep_port", type=int,
                       help="serve /jwks.json and /.well-known/ssf-configuration here")

    archive = sub.add_parser(
        "archive", help="archive events, findings and revocations to ClickHouse or chDB")
    _settings_flags(archive)
    archive.add_argument("--clickhouse", help="clickhouse://host:9000/sessionwatch "
                                              "(SESSIONWATCH_CLICKHOUSE)")
    archive.add_argument("--chdb", dest="chdb_dir", help="embedded chDB directory instead")
    archive.add_argument("--group", dest="archive_group", help="consumer group")
    archive.add_argument("--retention-days", dest="archive_retention_days", type=int,
                         help="drop day partitions older than this (0 = keep)")
    archive.add_argument("--tenant-retention", dest="archive_tenant_retention",
                         help="per tenant, e.g. bank=30,shop=365 (days; 0 = forever)")
    archive.add_argument("--truncate-ip", dest="archive_truncate_ip", action="store_const",
                         const=1, help="archive addresses as /24 (IPv4) and /48 (IPv6) only")

    caep_key = sub.add_parser("caep-key", help="make a signing key for CAEP SETs and print its JWKS")
    caep_key.add_argument("--out", type=Path, required=True, help="where to write the PEM key")
    caep_key.add_argument("--alg", choices=("ES256", "RS256"), default="ES256")

    demo = sub.add_parser("demo", help="broker + worker + simulated users with injected hijacks")
    demo.add_argument("--users", type=int, default=300, help="simulated users (default 300)")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the simulation")
    demo.add_argument("--bootstrap", help="use this Kafka instead of starting the embedded one")
    demo.add_argument("--rate", type=float, default=5000.0,
                      help="events/s to send (default 5000; above what the worker sustains, "
                           "latency measures the queue)")

    simulate = sub.add_parser("simulate", help="write seeded, labelled traffic as JSON lines + truth")
    simulate.add_argument("--users", type=int, default=1300, help="benign users (default 1300)")
    simulate.add_argument("--seed", type=int, default=11, help="random seed")
    simulate.add_argument("--attacks-per-class", dest="attacks_per_class", type=int,
                          help="instances of each attack class (default users/40, at least 3)")
    simulate.add_argument("--out", type=Path, default=Path("events.jsonl"),
                          help="events file; the truth goes beside it as <name>.truth.json")

    evaluate = sub.add_parser("evaluate", help="run simulated traffic through the worker and score it")
    evaluate.add_argument("--users", type=int, default=1300, help="benign users (default 1300)")
    evaluate.add_argument("--seed", type=int, default=11, help="random seed")
    evaluate.add_argument("--attacks-per-class", dest="attacks_per_class", type=int,
                          help="instances of each attack class (default users/40, at least 3)")
    evaluate.add_argument("--bootstrap", help="use this Kafka instead of starting the embedded one")
    evaluate.add_argument("--policy", type=Path, help="policy file for the worker")
    evaluate.add_argument("--rate", type=float, default=5000.0, help="events/s to send (default 5000)")
    evaluate.add_argument("--offline", action="store_true",
                          help="in-process through streams.local.LocalRunner: no broker, no worker")
    evaluate.add_argument("--twice", action="store_true",
                          help="run the same events twice and compare the revocation ids")
    evaluate.add_argument("--json", dest="json_path", type=Path, help="also write the report here")
    evaluate.add_argument("--model", type=Path,
                          help="score with this artefact too: adds the model's columns")
    evaluate.add_argument("--history-days", dest="history_days", type=int, default=0,
                          help="days of earlier benign history per user (default 0)")
    evaluate.add_argument("--edge-fingerprints", dest="edge_fingerprints", type=float,
                          default=0.0, help="share of sessions with JA4/RTT attrs (default 0)")

    replay = sub.add_parser("replay", help="re-publish archived events, or backtest a policy on them")
    replay.add_argument("--from", dest="since", required=True, help="start, RFC 3339 with offset")
    replay.add_argument("--to", dest="until", required=True, help="end (exclusive), RFC 3339")
    replay.add_argument("--tenant", help="only this tenant's events and revocations")
    replay.add_argument("--clickhouse", help="clickhouse://host:9000/sessionwatch "
                                             "(SESSIONWATCH_CLICKHOUSE)")
    replay.add_argument("--chdb", dest="chdb_dir", help="embedded chDB directory instead")
    replay.add_argument("--publish", action="store_true", help="re-send the events to --topic")
    replay.add_argument("--topic", help="topic to publish to (default sessionwatch.events)")
    replay.add_argument("--bootstrap", help="Kafka host:port[,host:port] (SESSIONWATCH_BOOTSTRAP)")
    replay.add_argument("--backtest", action="store_true",
                        help="run the events under --policy and compare with the archived decisions")
    replay.add_argument("--policy", type=Path,
                        help="policy file (SESSIONWATCH_POLICY; default: built-in defaults)")
    replay.add_argument("--json", dest="json_path", type=Path, help="also write the result here")
    replay.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    _kafka_flags(replay)

    label = sub.add_parser("label", help="record an analyst's verdict on a revocation or finding")
    target = label.add_mutually_exclusive_group(required=True)
    target.add_argument("--revocation", help="the revocation's id")
    target.add_argument("--finding", help="the finding's id")
    label.add_argument("--verdict", required=True, choices=("confirmed", "dismissed"),
                       help="confirmed: a real hijack; dismissed: a false alarm")
    label.add_argument("--note", default="", help="why (at most 2,000 characters; never logged)")
    label.add_argument("--analyst", help="who gives the verdict (default: $USER)")
    label.add_argument("--clickhouse", help="clickhouse://host:9000/sessionwatch "
                                            "(SESSIONWATCH_CLICKHOUSE)")
    label.add_argument("--chdb", dest="chdb_dir", help="embedded chDB directory instead")
    train = sub.add_parser("train", help="train the learned anomaly score and write its artefact")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-simulation", dest="from_simulation", action="store_true",
                        help="label with the simulator's truth")
    source.add_argument("--from-archive", dest="from_archive", action="store_true",
                        help="label with analysts' verdicts (`sessionwatch label`) + an audit sample")
    train.add_argument("--out", required=True, type=Path, help="artefact directory to write")
    train.add_argument("--seed", type=int, nargs="+",
                       help="simulation seeds (default 101 102 103)")
    train.add_argument("--users", type=int, default=1500, help="simulated users per seed")
    train.add_argument("--history-days", dest="history_days", type=int, default=3,
                       help="simulated days of history per user before the attack day")
    train.add_argument("--edge-fingerprints", dest="edge_fingerprints", type=float, default=0.5,
                       help="share of simulated sessions whose edge sends JA4 and RTTs")
    train.add_argument("--train-seed", dest="train_seed", type=int, default=0,
                       help="the estimators' random_state")
    train.add_argument("--since", help="archive: first event time (RFC 3339)")
    train.add_argument("--until", help="archive: end (RFC 3339, default now)")
    train.add_argument("--tenant", help="archive: one tenant only")
    train.add_argument("--audit-fraction", dest="audit_fraction", type=float, default=0.05,
                       help="archive: share of never-flagged sessions taken as benign (an audit "
                            "sample, so the model does not learn only what already alerted)")
    train.add_argument("--clickhouse", help="clickhouse://host:9000/sessionwatch "
                                            "(SESSIONWATCH_CLICKHOUSE)")
    train.add_argument("--chdb", dest="chdb_dir", help="embedded chDB directory instead")
    train.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")

    console = sub.add_parser("console", help="the operator console: live findings, sessions, "
                                             "verdicts and revocations by hand, in a browser")
    console.add_argument("--listen", dest="console_listen",
                         help="host:port (SESSIONWATCH_CONSOLE_LISTEN; default 127.0.0.1:8080)")
    console.add_argument("--accounts", dest="console_accounts",
                         help="TOML file of accounts and password hashes "
                              "(SESSIONWATCH_CONSOLE_ACCOUNTS)")
    console.add_argument("--clickhouse", help="clickhouse://host:9000/sessionwatch "
                                              "(SESSIONWATCH_CLICKHOUSE)")
    console.add_argument("--chdb-dir", "--chdb", dest="chdb_dir",
                         help="embedded chDB directory instead (the demo's: .sessionwatch/archive)")
    console.add_argument("--bootstrap", help="Kafka host:port: the live feed, revocations by hand "
                                             "and the console's own events (default: none; the "
                                             "live feed then follows the archive)")
    console.add_argument("--log-level", dest="log_level", help="debug, info, warning, error")
    _observability_flags(console)
    _kafka_flags(console)
    sub.add_parser("console-hash", help="read a password from stdin and print its argon2 hash "
                                        "for the console's accounts file")

    report = sub.add_parser("model-report", help="verify an artefact and print its figures")
    report.add_argument("directory", type=Path, help="the artefact directory")
    report.add_argument("--json", action="store_true", help="the figures as JSON")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Any:
    from streams.settings import Settings

    flags = {k: getattr(args, k, None) for k in
             ("bootstrap", "partitions", "log_level", "app_id", "store", "data_dir", "allowed_lateness_s",
              "policy", "model", "redis", "apply_group", "webhook_url", "caep_receivers", "caep_key",
              "caep_issuer", "caep_port", "clickhouse", "chdb_dir", "archive_group",
              "archive_retention_days", "archive_truncate_ip", "archive_tenant_retention",
              "console_listen", "console_accounts", "metrics_port", "metrics_host", "log_format",
              *KAFKA_FLAGS)}
    flags.update(extra)
    return Settings.load(os.environ, **flags)


def cmd_broker(args: argparse.Namespace) -> int:
    from sessionwatch.broker import broker_command, find_tansu

    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SessionwatchError(f"--listen: {args.listen!r} is not host:port")
    command = broker_command(find_tansu(), host, int(port))
    print(f"sessionwatch: Tansu broker on {host}:{port} (memory storage; Ctrl-C stops it)",
          file=sys.stderr)
    os.execv(command[0], command)  # replace this process: signals go straight to the broker


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    run_worker(settings)
    return 0


def run_worker(settings: Any) -> None:
    from sessionwatch.run_worker import run_worker as run

    run(settings)


def cmd_apply(args: argparse.Namespace) -> int:
    from sessionwatch.apply import run_apply
    from sessionwatch.run_observe import setup_logging

    settings = _settings(args)
    setup_logging(settings)
    kafka_preflight(settings)
    return run_apply(settings)


def cmd_archive(args: argparse.Namespace) -> int:
    from sessionwatch.archive import run_archive
    from sessionwatch.run_observe import setup_logging

    settings = _settings(args)
    setup_logging(settings)
    kafka_preflight(settings)
    return run_archive(settings)


def cmd_caep_key(args: argparse.Namespace) -> int:
    import json

    from storage.caep import SetSigner, generate_key

    if args.out.exists():
        raise SessionwatchError(f"--out: {str(args.out)!r} exists; refusing to overwrite a key")
    generate_key(args.out, args.alg)
    print(json.dumps(SetSigner(args.out).jwks(), indent=2))
    print(f"sessionwatch caep-key: {args.alg} key written to {args.out} (mode 600); the JWKS "
          "above is what receivers verify with", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sessionwatch.demo import run_demo

    if args.rate <= 0:
        raise SessionwatchError("--rate: must be a positive number of events per second")
    return run_demo(users=args.users, seed=args.seed, bootstrap=args.bootstrap, rate=args.rate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from producers.contract import encode
    from sessionwatch.simulation import simulate

    if args.users < 0:
        raise SessionwatchError("--users: must be zero or more")
    sim = simulate(users=args.users, seed=args.seed, attacks_per_class=args.attacks_per_class)
    out: Path = args.out
    with out.open("wb") as f:
        for event in sim.events:
            f.write(encode(event) + b"\n")
    truth_path = out.with_name(out.stem + ".truth.json")
    sim.truth.save(truth_path)
    print(f"sessionwatch simulate: {len(sim.events)} events -> {out}; {len(sim.truth.benign)} benign "
          f"sessions, {len(sim.truth.attacks)} attacks -> {truth_path}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sessionwatch.evaluate import print_report
    from sessionwatch.evaluate_run import EvalOptions, evaluate

    if args.rate <= 0:
        raise SessionwatchError("--rate: must be a positive number of events per second")
    if args.policy is not None and not args.policy.is_file():
        raise SessionwatchError(f"--policy: no such file {str(args.policy)!r}")
    if args.model is not None and not (args.model / "model.json").is_file():
        raise SessionwatchError(f"--model: {str(args.model)!r} has no model.json; give the "
                                "directory `sessionwatch train --out DIR` wrote")
    opts = EvalOptions(users=args.users, seed=args.seed, attacks_per_class=args.attacks_per_class,
                       bootstrap=args.bootstrap, policy=args.policy, rate=args.rate,
                       offline=args.offline, twice=args.twice, json_path=args.json_path,
                       model=args.model, history_days=args.history_days,
                       edge_fingerprints=args.edge_fingerprints)
    print_report(evaluate(opts))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from sessionwatch.replay import replay_command

    settings = _settings(args)
    if args.publish:
        kafka_preflight(settings)
    return replay_command(args, settings)


def cmd_train(args: argparse.Namespace) -> int:
    from sessionwatch.archive import open_archive
    from sessionwatch.train import train_command

    logging.basicConfig(level=(args.log_level or "warning").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return train_command(args, backend_for=lambda a: open_archive(_settings(a)))


def cmd_model_report(args: argparse.Namespace) -> int:
    from sessionwatch.train import report_command

    return report_command(args.directory, as_json=args.json)


def cmd_label(args: argparse.Namespace) -> int:
    from sessionwatch.label import label_command

    return label_command(args, _settings(args), default_analyst=os.environ.get("USER", ""))


def cmd_console(args: argparse.Namespace) -> int:
    from sessionwatch.console.serve import run_console
    from sessionwatch.run_observe import setup_logging

    settings = _settings(args)
    if not settings.clickhouse and not settings.chdb_dir:
        from sessionwatch.demo import DEMO_ARCHIVE

        if not DEMO_ARCHIVE.is_dir():
            raise SessionwatchError("no archive: give --clickhouse URL or --chdb-dir DIR (run "
                                    "`sessionwatch demo` first for the demo's archive)")
        settings = settings.replace(chdb_dir=str(DEMO_ARCHIVE))
    setup_logging(settings)
    use_broker = args.bootstrap is not None or "SESSIONWATCH_BOOTSTRAP" in os.environ
    if use_broker:
        kafka_preflight(settings)
    return run_console(settings, use_broker=use_broker,
                       hash_key=os.environ.get("SESSIONWATCH_HASH_KEY"))


def cmd_console_hash(args: argparse.Namespace) -> int:
    from sessionwatch.console.accounts import hash_command

    return hash_command()


COMMANDS = {"console": cmd_console, "console-hash": cmd_console_hash,
            "broker": cmd_broker, "worker": cmd_worker, "apply": cmd_apply,
            "archive": cmd_archive,
            "caep-key": cmd_caep_key, "demo": cmd_demo,
            "simulate": cmd_simulate, "evaluate": cmd_evaluate,
            "replay": cmd_replay, "label": cmd_label, "train": cmd_train,
            "model-report": cmd_model_report}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SessionwatchError as exc:
        print(f"sessionwatch {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
