"""The policy file: what loads, how tenants merge onto the default, and every error's exact wording."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from producers.contract import Action, Event, EventType, Severity
from producers.errors import ConfigError
from streams.detectors import BY_ID, SessionDetector, Signal
from streams.detectors.ip_change import IpChange
from streams.detectors.ua_change import UaChange
from streams.pipeline import SessionPipeline
from streams.policy import Allowlist, DetectorRule, Policy, TenantPolicy
from streams.policy_file import PolicyFileError, describe_policy, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "policy.yaml"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/130.0.0.0 Safari/537.36")
HOME, HOSTING = "73.162.10.20", "167.99.10.10"  # Comcast; DigitalOcean (enriched DIGITALOCEAN-ASN)


@dataclass(frozen=True)
class ThrottleParams:
    window_s: float = 60.0
    limit: int = 3
    strict: bool = False
    target: str = "newest"
    networks: tuple[str, ...] = ()
    grace_s: float | None = None

    def __post_init__(self) -> None:
        if self.target not in ("newest", "oldest"):
            raise ConfigError(f"test.throttle params.target: {self.target!r} is not newest or oldest")


class Throttle(SessionDetector):
    """A detector with every kind of parameter, registered only in these tests."""

    id = "test.throttle"
    Params = ThrottleParams


REGISTRY = {**BY_ID, Throttle.id: Throttle}
KNOWN = ", ".join(sorted(REGISTRY))
SECTION_KEYS = ("monitor_only, revoke_at, corroborate_at, corroborating_detectors, dedup_window_s, "
                "block_s, allowlist, detectors")


def parse(data: dict[str, Any]) -> Policy:
    return parse_policy(data, "policy.yaml", REGISTRY)


def det(detector: str, **rule: Any) -> dict[str, Any]:
    return {"default": {"detectors": {detector: rule}}}


# --- errors ----------------------------------------------------------------------------------

ERRORS = [
    # (case, file contents, the exact message)
    ("not-a-mapping", ["a"],
     "policy.yaml: the file must be a mapping with keys version, default, tenants (got list)"),
    ("unknown-top-level-key", {"defaults": {}},
     "policy.yaml: defaults: unknown key; did you mean default? known: version, default, tenants"),
    ("unsupported-version", {"version": 2},
     "policy.yaml: version: 2 is not supported; supported: 1"),
    ("version-as-string", {"version": "1"},
     "policy.yaml: version: '1' is not supported; supported: 1"),
    ("default-not-a-mapping", {"default": ["monitor_only"]},
     "policy.yaml: default: must be a mapping (got list)"),
    ("tenants-not-a-mapping", {"tenants": ["bank"]},
     "policy.yaml: tenants: must be a mapping (got list)"),
    ("tenant-not-a-mapping", {"tenants": {"bank": True}},
     "policy.yaml: tenants.bank: must be a mapping (got boolean)"),
    ("tenant-name-not-a-string", {"tenants": {7: {}}},
     "policy.yaml: tenants.7: tenant names must be non-empty strings"),
    ("unknown-tenant-key", {"tenants": {"bank": {"monitor-only": True}}},
     f"policy.yaml: tenants.bank.monitor-only: unknown key; did you mean monitor_only? known: "
     f"{SECTION_KEYS}"),
    ("unknown-key-without-suggestion", {"default": {"colour": "red"}},
     f"policy.yaml: default.colour: unknown key; known: {SECTION_KEYS}"),
    ("monitor-only-not-bool", {"default": {"monitor_only": "yes"}},
     "policy.yaml: default.monitor_only: must be true or false (got 'yes')"),
    ("bad-severity", {"default": {"revoke_at": "severe"}},
     "policy.yaml: default.revoke_at: 'severe' is not a severity; allowed: low, medium, high, critical"),
    ("severity-wrong-case", {"tenants": {"bank": {"corroborate_at": "HIGH"}}},
     "policy.yaml: tenants.bank.corroborate_at: 'HIGH' is not a severity; "
     "allowed: low, medium, high, critical"),
    ("corroborating-zero", {"default": {"corroborating_detectors": 0}},
     "policy.yaml: default.corroborating_detectors: must be a whole number of at least 1 (got 0)"),
    ("corroborating-bool", {"default": {"corroborating_detectors": True}},
     "policy.yaml: default.corroborating_detectors: must be a whole number of at least 1 (got True)"),
    ("zero-duration", {"default": {"block_s": 0}},
     "policy.yaml: default.block_s: must be a positive number of seconds (got 0)"),
    ("negative-duration", {"tenants": {"bank": {"dedup_window_s": -5}}},
     "policy.yaml: tenants.bank.dedup_window_s: must be a positive number of seconds (got -5)"),
    ("duration-not-a-number", {"default": {"block_s": "15m"}},
     "policy.yaml: default.block_s: must be a positive number of seconds (got '15m')"),
    ("infinite-duration", {"default": {"block_s": float("inf")}},
     "policy.yaml: default.block_s: must be a positive number of seconds (got inf)"),
    ("allowlist-not-a-mapping", {"default": {"allowlist": ["10.0.0.0/8"]}},
     "policy.yaml: default.allowlist: must be a mapping (got list)"),
    ("unknown-allowlist-key", {"default": {"allowlist": {"ips": []}}},
     "policy.yaml: default.allowlist.ips: unknown key; known: cidrs, asns, users"),
    ("allowlist-list-is-a-string", {"default": {"allowlist": {"users": "monitoring-bot"}}},
     "policy.yaml: default.allowlist.users: must be a list of strings (got string)"),
    ("allowlist-entry-not-a-string", {"default": {"allowlist": {"asns": [15169]}}},
     "policy.yaml: default.allowlist.asns[0]: must be a non-empty string (got 15169)"),
    ("cidr-host-bits", {"default": {"allowlist": {"cidrs": ["10.0.0.0/8", "10.1.2.3/16"]}}},
     "policy.yaml: default.allowlist.cidrs[1]: '10.1.2.3/16' is not a CIDR "
     "(10.1.2.3/16 has host bits set); did you mean 10.1.0.0/16?"),
    ("cidr-garbage", {"tenants": {"bank": {"allowlist": {"cidrs": ["10.0.0.0/33"]}}}},
     "policy.yaml: tenants.bank.allowlist.cidrs[0]: '10.0.0.0/33' is not a CIDR "
     "('10.0.0.0/33' does not appear to be an IPv4 or IPv6 network); "
     "write e.g. 10.0.0.0/8, 2001:db8::/32 or a single address"),
    ("detectors-not-a-mapping", {"default": {"detectors": ["session.ua_change"]}},
     "policy.yaml: default.detectors: must be a mapping (got list)"),
    ("unknown-detector", {"tenants": {"bank": {"detectors": {"session.ua_chang": {}}}}},
     f"policy.yaml: tenants.bank.detectors.session.ua_chang: unknown detector; "
     f"did you mean session.ua_change? known: {KNOWN}"),
    ("rule-not-a-mapping", {"default": {"detectors": {"session.ua_change": "alert"}}},
     "policy.yaml: default.detectors.session.ua_change: must be a mapping (got string)"),
    ("unknown-rule-key", det("session.ua_change", actoin="alert"),
     "policy.yaml: default.detectors.session.ua_change.actoin: unknown key; did you mean action? "
     "known: enabled, action, severity, params"),
    ("action-not-allowed", det("session.ua_change", action="block"),
     "policy.yaml: default.detectors.session.ua_change.action: 'block' is not an action of "
     "session.ua_change; allowed: revoke, step_up, alert"),
    ("enabled-not-bool", det("session.ip_change", enabled="off"),
     "policy.yaml: default.detectors.session.ip_change.enabled: must be true or false (got 'off')"),
    ("rule-severity", det("session.ip_change", severity="urgent"),
     "policy.yaml: default.detectors.session.ip_change.severity: 'urgent' is not a severity; "
     "allowed: low, medium, high, critical"),
    ("params-of-a-detector-without-any", det("session.ip_change", params={"window_s": 5}),
     "policy.yaml: default.detectors.session.ip_change.params.window_s: "
     "session.ip_change has no parameters"),
    ("params-not-a-mapping", det("test.throttle", params=[1]),
     "policy.yaml: default.detectors.test.throttle.params: must be a mapping (got list)"),
    ("unknown-param", det("test.throttle", params={"windows_s": 5}),
     "policy.yaml: default.detectors.test.throttle.params.windows_s: unknown parameter of "
     "test.throttle; did you mean window_s? known: window_s, limit, strict, target, networks, grace_s"),
    ("param-str-for-float", det("test.throttle", params={"window_s": "60"}),
     "policy.yaml: default.detectors.test.throttle.params.window_s: must be a float (got '60')"),
    ("param-float-for-int", det("test.throttle", params={"limit": 2.5}),
     "policy.yaml: default.detectors.test.throttle.params.limit: must be an int (got 2.5)"),
    ("param-bool-for-int", det("test.throttle", params={"limit": True}),
     "policy.yaml: default.detectors.test.throttle.params.limit: must be an int (got True)"),
    ("param-int-for-bool", det("test.throttle", params={"strict": 1}),
     "policy.yaml: default.detectors.test.throttle.params.strict: must be true or false (got 1)"),
    ("param-int-for-str", det("test.throttle", params={"target": 3}),
     "policy.yaml: default.detectors.test.throttle.params.target: must be a str (got 3)"),
    ("param-list-type", det("test.throttle", params={"networks": "GOOGLE"}),
     "policy.yaml: default.detectors.test.throttle.params.networks: must be a list of str "
     "(got 'GOOGLE')"),
    ("param-zero-duration", det("test.throttle", params={"window_s": 0}),
     "policy.yaml: default.detectors.test.throttle.params.window_s: must be a positive duration "
     "(got 0)"),
    ("param-optional-duration", det("test.throttle", params={"grace_s": -1}),
     "policy.yaml: default.detectors.test.throttle.params.grace_s: must be a positive duration "
     "(got -1)"),
    ("param-rejected-by-the-detector", {"tenants": {"bank": {"detectors": {
        "test.throttle": {"params": {"target": "all"}}}}}},
     "policy.yaml: tenants.bank.detectors.test.throttle.params: "
     "test.throttle params.target: 'all' is not newest or oldest"),
]


@pytest.mark.parametrize(("data", "message"), [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_every_error_names_file_field_and_what_is_allowed(data, message):
    with pytest.raises(ConfigError) as raised:
        parse(data)
    assert str(raised.value) == message


def test_every_problem_is_reported_at_once_in_file_order():
    with pytest.raises(PolicyFileError) as raised:
        parse({"version": 3, "default": {"revoke_at": "hi", "block_s": 0},
               "tenants": {"bank": {"detectors": {"session.nope": {}}}}})
    assert [p.split(": ")[1] for p in raised.value.problems] == [
        "version", "default.revoke_at", "default.block_s", "tenants.bank.detectors.session.nope"]
    assert str(raised.value) == "\n".join(raised.value.problems)


def test_an_inherited_bad_param_is_reported_once_not_per_tenant():
    with pytest.raises(PolicyFileError) as raised:
        parse({"default": {"detectors": {"test.throttle": {"params": {"target": "all"}}}},
               "tenants": {"a": {}, "b": {"monitor_only": True}}})
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith("policy.yaml: default.detectors.test.throttle.params: ")


FILE_ERRORS = [
    ("policy.json", "{}", "policy.json: unsupported policy file type '.json'; name it .yaml, .yml or .toml"),
    ("policy.yaml", "default: [\n", "policy.yaml: not valid YAML: line 2, column 1: expected the node "
     "content, but found '<stream end>'"),
    ("policy.yaml", "default:\n  block_s: 1\n  block_s: 2\n",
     "policy.yaml: not valid YAML: line 3, column 3: duplicate key 'block_s'"),
    ("policy.yml", "- a\n- b\n",
     "policy.yml: the file must be a mapping with keys version, default, tenants (got list)"),
    ("policy.toml", "[default\n", "policy.toml: not valid TOML: Expected ']' at the end of a table "
     "declaration (at line 1, column 9)"),
]


@pytest.mark.parametrize(("name", "text", "message"), FILE_ERRORS, ids=[c[1][:12] for c in FILE_ERRORS])
def test_file_errors(tmp_path, monkeypatch, name, text, message):
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_policy(name)
    assert str(raised.value) == message


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"policy\.yaml: cannot read the policy file \(.*No such file"):
        load_policy(tmp_path / "policy.yaml")


# --- what loads --------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["", "# nothing yet\n", "version: 1\n", "default:\ntenants:\n"])
def test_an_empty_file_or_missing_sections_are_the_built_in_policy(tmp_path, text):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    policy = load_policy(path)
    assert policy == Policy(source=str(path))
    assert policy.source == str(path)


def test_the_example_policy_loads():
    policy = load_policy(EXAMPLE)
    assert policy.source == str(EXAMPLE)
    assert set(policy.tenants) == {"retail", "treasury", "wealth-pilot", "partner-api"}
    assert policy.default.allowlist.users == {"monitoring-bot", "synthetic-login-check"}
    assert policy.for_tenant("wealth-pilot").monitor_only
    assert policy.for_tenant("treasury").revoke_at is Severity.MEDIUM
    assert not policy.enabled("partner-api", "session.ua_change")
    assert policy.for_tenant("unlisted") is policy.default
    timeouts = BY_ID["session.timeouts"]
    assert policy.default.params(timeouts) == timeouts.params(idle_s=900.0, absolute_s=28800.0)
    assert policy.for_tenant("retail").params(timeouts) == timeouts.params(idle_s=1800.0, absolute_s=28800.0)
    concurrent = BY_ID["user.concurrent_sessions"]
    assert policy.for_tenant("treasury").params(concurrent) == concurrent.params(limit=1, target="newest")
    assert policy.for_tenant("partner-api").action("source.credential_stuffing", "block") == "alert"
    assert describe_policy(policy).startswith(f"policy from {EXAMPLE}: default + 4 tenants")


def test_the_example_policy_shows_every_setting():
    text = EXAMPLE.read_text()
    for key in ("version", "monitor_only", "revoke_at", "corroborate_at", "corroborating_detectors",
                "dedup_window_s", "block_s", "cidrs", "asns", "users", "enabled", "action",
                "severity", "params"):
        assert f"{key}:" in text, key


def test_yaml_anchors_can_share_settings_between_tenants(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("x-strict: &strict\n  revoke_at: medium\n  block_s: 60\n"
                    "tenants:\n  a: {<<: *strict}\n  b:\n    <<: *strict\n    block_s: 120\n")
    policy = load_policy(path)
    assert (policy.for_tenant("a").revoke_at, policy.for_tenant("a").block_s) == (Severity.MEDIUM, 60)
    assert (policy.for_tenant("b").revoke_at, policy.for_tenant("b").block_s) == (Severity.MEDIUM, 120)


def test_values_arrive_typed():
    policy = parse({"default": {
        "monitor_only": True, "revoke_at": "critical", "corroborate_at": "high",
        "corroborating_detectors": 3, "dedup_window_s": 60, "block_s": 1.5,
        "allowlist": {"cidrs": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"], "asns": ["ACME-CORP"],
                      "users": ["monitoring-bot"]},
        "detectors": {"session.ua_change": {"enabled": False, "action": "step_up", "severity": "low"}},
    }})
    assert policy.default == TenantPolicy(
        monitor_only=True, revoke_at=Severity.CRITICAL, corroborate_at=Severity.HIGH,
        corroborating_detectors=3, dedup_window_s=60.0, block_s=1.5,
        allowlist=Allowlist(
            cidrs=(ip("10.0.0.0/8"), ip("2001:db8::/32"), ip("192.0.2.7/32")),
            asns=frozenset({"ACME-CORP"}), users=frozenset({"monitoring-bot"})),
        detectors={"session.ua_change": DetectorRule(enabled=False, action="step_up",
                                                     severity=Severity.LOW)},
    )


def ip(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


# --- merging -----------------------------------------------------------------------------------

BASE = {
    "default": {
        "revoke_at": "high",
        "block_s": 600,
        "allowlist": {"cidrs": ["10.0.0.0/8"], "asns": ["ACME-CORP"], "users": ["monitoring-bot"]},
        "detectors": {
            "session.ua_change": {"action": "step_up", "severity": "high"},
            "test.throttle": {"params": {"limit": 5, "window_s": 120}},
        },
    },
}


def with_tenant(**tenant: Any) -> Policy:
    return parse({**BASE, "tenants": {"bank": tenant}})


def test_a_tenant_inherits_everything_it_does_not_set():
    policy = with_tenant(monitor_only=True)
    bank = policy.for_tenant("bank")
    assert bank.monitor_only and not policy.default.monitor_only
    assert dataclasses.replace(bank, monitor_only=False) == policy.default


def test_a_tenant_listed_without_settings_is_the_default():
    policy = parse({**BASE, "tenants": {"bank": None}})
    assert policy.for_tenant("bank") == policy.default


def test_detector_rules_merge_setting_by_setting():
    bank = with_tenant(detectors={"session.ua_change": {"action": "alert"},
                                  "session.ip_change": {"enabled": False}}).for_tenant("bank")
    assert bank.rule("session.ua_change") == DetectorRule(action="alert", severity=Severity.HIGH)
    assert bank.rule("session.ip_change") == DetectorRule(enabled=False)


def test_params_merge_parameter_by_parameter_and_reach_the_detector():
    policy = with_tenant(detectors={"test.throttle": {"params": {"limit": 2, "networks": ["GOOGLE"]}}})
    assert policy.for_tenant("bank").params(Throttle) == ThrottleParams(
        window_s=120.0, limit=2, networks=("GOOGLE",))
    assert policy.default.params(Throttle) == ThrottleParams(window_s=120.0, limit=5)
    assert policy.for_tenant("other").params(Throttle) == ThrottleParams(window_s=120.0, limit=5)
    assert Policy().default.params(Throttle) == ThrottleParams()


def test_an_int_is_accepted_where_a_float_is_declared():
    params = with_tenant().default.params(Throttle)
    assert params.window_s == 120.0 and type(params.window_s) is float


def test_allowlist_lists_replace_the_default_and_unmentioned_lists_are_inherited():
    bank = with_tenant(allowlist={"cidrs": ["192.0.2.0/24"], "users": []}).for_tenant("bank")
    assert bank.allowlist == Allowlist(cidrs=(ip("192.0.2.0/24"),), asns=frozenset({"ACME-CORP"}),
                                       users=frozenset())


def test_scalars_replace():
    bank = with_tenant(revoke_at="critical", block_s=60).for_tenant("bank")
    assert (bank.revoke_at, bank.block_s) == (Severity.CRITICAL, 60.0)


def test_tenants_do_not_share_mutable_rules():
    policy = parse({**BASE, "tenants": {"a": {}, "b": {}}})
    assert policy.for_tenant("a").rule("test.throttle").params is not \
        policy.for_tenant("b").rule("test.throttle").params


# --- TOML ----------------------------------------------------------------------------------------

YAML_POLICY = """\
version: 1
default:
  revoke_at: high
  dedup_window_s: 3600
  allowlist:
    cidrs: ["10.0.0.0/8", "2001:db8::/32"]
    asns: [ACME-CORP]
    users: [monitoring-bot]
  detectors:
    session.ua_change: {enabled: true, action: revoke, severity: high}
tenants:
  bank:
    monitor_only: true
    detectors:
      session.ip_change: {action: alert}
"""

TOML_POLICY = """\
version = 1

[default]
revoke_at = "high"
dedup_window_s = 3600

[default.allowlist]
cidrs = ["10.0.0.0/8", "2001:db8::/32"]
asns = ["ACME-CORP"]
users = ["monitoring-bot"]

[default.detectors."session.ua_change"]
enabled = true
action = "revoke"
severity = "high"

[tenants.bank]
monitor_only = true

[tenants.bank.detectors."session.ip_change"]
action = "alert"
"""


def test_toml_and_yaml_load_the_same_policy(tmp_path):
    (tmp_path / "policy.yaml").write_text(YAML_POLICY)
    (tmp_path / "policy.toml").write_text(TOML_POLICY)
    from_yaml = load_policy(tmp_path / "policy.yaml")
    from_toml = load_policy(tmp_path / "policy.toml")
    assert from_toml.source.endswith("policy.toml")
    assert dataclasses.replace(from_toml, source="") == dataclasses.replace(from_yaml, source="")
    assert from_yaml.for_tenant("bank").rule("session.ip_change").action == "alert"


def test_an_unquoted_toml_detector_id_gets_a_hint(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[default.detectors.session.ua_change]\naction = "alert"\n')
    with pytest.raises(ConfigError) as raised:
        load_policy(path)
    assert str(raised.value) == (
        f"{path}: default.detectors.session: unknown detector; did you mean session.ua_change? "
        'in TOML, quote the id: [default.detectors."session.ua_change"]')


def test_toml_errors_use_the_same_paths(tmp_path):
    path = tmp_path / "policy.toml"
    path.write_text('[tenants.bank.detectors."session.ua_change"]\naction = "block"\n')
    where = r"policy\.toml: tenants\.bank\.detectors\.session\.ua_change\.action: "
    with pytest.raises(ConfigError, match=where + r"'block' is not an action of session\.ua_change"):
        load_policy(path)


# --- every registered detector -------------------------------------------------------------------

@pytest.mark.parametrize("detector", sorted(BY_ID.values(), key=lambda d: d.id), ids=lambda d: d.id)
def test_every_registered_detector_can_be_configured_from_a_file(detector):
    """Each action and each parameter (at its default, as a file would spell it) loads."""
    defaults = {f.name: getattr(detector.Params(), f.name) for f in dataclasses.fields(detector.Params)}
    as_written = {k: list(v) if isinstance(v, tuple | frozenset) else v for k, v in defaults.items()}
    for action in detector.actions:
        rule: dict[str, Any] = {"action": action}
        if as_written:
            rule["params"] = as_written
        policy = parse_policy({"tenants": {"t": {"detectors": {detector.id: rule}}}}, "policy.yaml")
        assert policy.for_tenant("t").action(detector.id, detector.default_action) == action
        assert policy.for_tenant("t").params(detector) == detector.Params()
    assert detector.default_action in detector.actions


# --- the loaded policy decides ---------------------------------------------------------------------

DECIDING = """\
default:
  allowlist:
    users: [monitoring-bot]
    asns: [DIGITALOCEAN-ASN]
tenants:
  shop:
    allowlist: {users: [], asns: []}
  bank:
    allowlist: {cidrs: ["167.99.0.0/16"], asns: []}
  broker:
    allowlist: {asns: []}
    detectors:
      session.ua_change: {action: step_up}
      session.ip_change: {action: step_up}
  alerts:
    allowlist: {asns: []}
    detectors:
      session.ua_change: {action: alert}
      session.ip_change: {action: alert}
"""


def ev(n: int, tenant: str, ip: str = HOME, ua: str = CHROME, user: str = "alice") -> Event:
    return Event(schema="sessionwatch.event/1", id=f"{tenant}-{user}-{n}", type=EventType.ACTIVITY,
                 time=T0 + timedelta(seconds=10 * n), tenant=tenant, session=f"s-{tenant}-{user}",
                 user=user, ip=ip, user_agent=ua)


def hijack(pipeline: SessionPipeline, tenant: str, user: str = "alice"):
    """A session whose cookie turns up at a hosting provider in curl: findings from both detectors."""
    first = pipeline.process(ev(1, tenant, user=user), None, T0)
    return pipeline.process(ev(2, tenant, ip=HOSTING, ua="curl/8.5.0", user=user), first.state, T0)


@pytest.fixture
def deciding(tmp_path, enricher) -> SessionPipeline:
    path = tmp_path / "policy.yaml"
    path.write_text(DECIDING)
    return SessionPipeline(enricher, load_policy(path), detectors=[IpChange(), UaChange()])


BOTH = {"session.ip_change", "session.ua_change"}


def test_loaded_policy_revokes_where_nothing_exempts(deciding):
    out = hijack(deciding, "shop")
    assert out.revocation is not None and out.revocation.action is Action.REVOKE


def test_loaded_allowlisted_user_is_not_acted_on_but_its_findings_remain(deciding):
    out = hijack(deciding, "broker", user="monitoring-bot")  # users inherited from the default
    assert {f.detector for f in out.findings} == BOTH and out.revocations == []


def test_a_tenant_removes_an_allowlisted_user_by_replacing_the_list(deciding):
    assert hijack(deciding, "shop", user="monitoring-bot").revocation is not None


def test_loaded_default_allowlist_exempts_a_network(deciding):
    out = hijack(deciding, "unlisted-tenant")
    assert {f.detector for f in out.findings} == BOTH and out.revocations == []


def test_loaded_tenant_cidr_allowlist_exempts(deciding):
    out = hijack(deciding, "bank")
    assert {f.detector for f in out.findings} == BOTH and out.revocations == []


def test_loaded_per_tenant_actions(deciding):
    assert hijack(deciding, "broker").revocation.action is Action.STEP_UP
    # both alert-only: findings, no decision (a move into a datacenter is high on its own)
    out = hijack(deciding, "alerts")
    assert {f.detector for f in out.findings} == BOTH and out.revocations == []


def test_decide_honours_a_loaded_policy_directly():
    """The same through Policy.decide with hand-built detections (no pipeline)."""
    policy = parse_policy({"default": {"allowlist": {"users": ["monitoring-bot"]}},
                           "tenants": {"bank": {"detectors": {"session.ua_change": {"action": "step_up"}}}}},
                          "inline")
    signal = Signal(Severity.HIGH, "curl took over", {})
    decisions = {}
    for tenant, user in (("bank", "alice"), ("shop", "alice"), ("shop", "monitoring-bot")):
        event = ev(2, tenant, ip=HOSTING, ua="curl/8.5.0", user=user)
        detection = policy.detection(UaChange(), signal, event, event.session, user)
        revocations = policy.decide(event, [detection], T0)
        decisions[tenant, user] = [r.action for r in revocations]
    assert decisions == {("bank", "alice"): [Action.STEP_UP], ("shop", "alice"): [Action.REVOKE],
                         ("shop", "monitoring-bot"): []}


# --- the startup log line ------------------------------------------------------------------------

def test_describe_policy():
    policy = parse({
        "default": {"allowlist": {"users": ["bot"]},
                    "detectors": {"session.ua_change": {"action": "step_up"}}},
        "tenants": {
            "bank": {"monitor_only": True, "revoke_at": "critical",
                     "detectors": {"session.ip_change": {"action": "alert", "severity": "low"},
                                   "test.throttle": {"params": {"limit": 1, "window_s": 30}}}},
            "shop": {"detectors": {"session.ua_change": {"enabled": False},
                                   "session.ip_change": {"action": "revoke"}}},
        },
    })
    assert describe_policy(policy, REGISTRY) == (
        "policy from policy.yaml: default + 2 tenants (bank, shop); monitor-only: bank; "
        "settings: revoke_at=critical [bank]; disabled: session.ua_change [shop]; "
        "actions: session.ua_change=step_up [default], session.ip_change=alert [bank]; "
        "severity overrides: session.ip_change=low [bank]; "
        "thresholds: test.throttle.window_s=30 [bank], test.throttle.limit=1 [bank]; "
        "allowlists: default (0 CIDRs, 0 networks, 1 users)")


def test_describe_the_built_in_policy():
    assert describe_policy(Policy()) == "policy from built-in defaults: default for every tenant"
