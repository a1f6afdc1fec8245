"""Loads the revocation policy (streams/policy.py) from a YAML or TOML file, checked against the registry.

Every problem in the file is reported at once, each naming the file, the field path and what is
allowed, so an operator fixes a policy in one round instead of one error per restart.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import tomllib
import types
import typing
from collections.abc import Callable, Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

import streams.detectors
from producers.contract import Severity
from producers.errors import ConfigError
from streams.detectors.base import NoParams
from streams.policy import Allowlist, DetectorRule, IPNetwork, Policy, TenantPolicy

if typing.TYPE_CHECKING:
    from streams.detectors.base import Detector

    Registry = Mapping[str, type[Detector[Any]]]

SUPPORTED_VERSIONS = (1,)
TOP_LEVEL_KEYS = ("version", "default", "tenants")
ALLOWLIST_KEYS = ("cidrs", "asns", "users")
RULE_KEYS = ("enabled", "action", "severity", "params")
SEVERITIES = tuple(s.value for s in Severity)
# Parameter names ending like this are durations: zero or less is always a mistake.
DURATION_SUFFIXES = ("_s", "_ms", "_seconds")


class PolicyFileError(ConfigError):
    """A policy file with one or more problems; `problems` holds one message per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_policy(path: str | Path, detectors: Registry | None = None) -> Policy:
    """The policy in a `.yaml`/`.yml` or `.toml` file; an empty file is the built-in policy.

    `detectors` is the registry to check detector ids, actions and params against (default: every
    registered detector, `streams.detectors.BY_ID`).
    """
    source = str(path)
    suffix = Path(path).suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise ConfigError(f"{source}: unsupported policy file type {suffix or '(none)'!r}; "
                          "name it .yaml, .yml or .toml")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read the policy file ({e}); "
                          "check the path given for the policy") from None
    try:
        data = tomllib.loads(text) if suffix == ".toml" else yaml.load(text, Loader=_UniqueKeyLoader)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {_yaml_problem(e)}") from None
    return parse_policy({} if data is None else data, source, detectors)


def parse_policy(data: Mapping[str, Any], source: str, detectors: Registry | None = None) -> Policy:
    """The policy described by an already-parsed file (`source` names it in errors and logs)."""
    check = _Checker(source, streams.detectors.BY_ID if detectors is None else detectors)
    if not isinstance(data, Mapping):
        raise PolicyFileError([f"{source}: the file must be a mapping with keys "
                               f"{', '.join(TOP_LEVEL_KEYS)} (got {_kind(data)})"])
    # `x-` keys are free for YAML anchors (`x-strict: &strict {...}`, then `<<: *strict`).
    check.keys({k: v for k, v in data.items() if not str(k).startswith("x-")}, "", TOP_LEVEL_KEYS,
               "unknown key")
    version = data.get("version", SUPPORTED_VERSIONS[-1])
    if type(version) is not int or version not in SUPPORTED_VERSIONS:
        check.fail("version", f"{version!r} is not supported; supported: "
                   + ", ".join(map(str, SUPPORTED_VERSIONS)))
    default = check.section(data.get("default"), "default")
    tenants: dict[str, dict[str, Any]] = {}
    raw_tenants = check.mapping(data.get("tenants"), "tenants")
    for name, section in raw_tenants.items():
        if not isinstance(name, str) or not name:
            check.fail(f"tenants.{name!r}", "tenant names must be non-empty strings")
            continue
        tenants[name] = _merge(default, check.section(section, f"tenants.{name}"))
    default_policy = check.tenant_policy(default, "default")
    built = {name: check.tenant_policy(part, f"tenants.{name}", default)
             for name, part in tenants.items()}
    if check.problems:
        raise PolicyFileError(check.problems)
    return Policy(default=default_policy, tenants=built, source=source)


def describe_policy(policy: Policy, detectors: Registry | None = None) -> str:
    """One line for the worker's startup log: tenants, monitor-only ones, disabled detectors, actions,
    severity and threshold overrides, allowlists.

    Tenants inherit the default, so a tenant is listed under a setting only where it differs from
    the default (and the default only where it differs from the built-in policy); monitor-only
    lists every scope that is. "default" means every tenant not listed in the file.
    """
    registry = streams.detectors.BY_ID if detectors is None else detectors
    tenants = sorted(policy.tenants)
    scopes = [("default", policy.default, _BUILT_IN)]
    scopes += [(name, policy.tenants[name], policy.default) for name in tenants]
    found: dict[str, dict[str, list[str]]] = {
        "settings": {}, "disabled": {}, "re-enabled": {}, "actions": {}, "severity overrides": {},
        "thresholds": {}}

    def note(kind: str, what: str, scope: str) -> None:
        found[kind].setdefault(what, []).append(scope)

    for name, tp, parent in scopes:
        for f in _SCALAR_FIELDS:
            if f != "monitor_only" and getattr(tp, f) != getattr(parent, f):
                note("settings", f"{f}={_show(getattr(tp, f))}", name)
        for detector_id in sorted({*tp.detectors, *parent.detectors}):
            rule, before = tp.rule(detector_id), parent.rule(detector_id)
            if rule.enabled != before.enabled:
                note("disabled" if not rule.enabled else "re-enabled", detector_id, name)
            if not rule.enabled:
                continue
            known = registry.get(detector_id)
            default_action = known.default_action if known is not None else None
            action, was = rule.action or default_action, before.action or default_action
            if action != was:
                note("actions", f"{detector_id}={action or 'its default'}", name)
            built_in = known.Params() if known is not None else None
            for key, value in rule.params.items():
                if value != before.params.get(key, getattr(built_in, key, None)):
                    note("thresholds", f"{detector_id}.{key}={_show(value)}", name)
            if rule.severity != before.severity:
                note("severity overrides",
                     f"{detector_id}={rule.severity.value if rule.severity else 'as reported'}", name)
    parts = [f"policy from {policy.source}: default"
             + (f" + {len(tenants)} tenant{'s' * (len(tenants) != 1)} ({', '.join(tenants)})"
                if tenants else " for every tenant")]
    monitor = [name for name, tp, _ in scopes if tp.monitor_only]
    if monitor:
        parts.append("monitor-only: " + ", ".join(monitor))
    for kind, items in found.items():
        if items:
            parts.append(f"{kind}: " + ", ".join(f"{k} [{', '.join(v)}]" for k, v in items.items()))
    allow = [f"{name} {_allowlist_size(tp.allowlist)}" for name, tp, parent in scopes
             if tp.allowlist != parent.allowlist]
    if allow:
        parts.append("allowlists: " + ", ".join(allow))
    return "; ".join(parts)


_BUILT_IN = TenantPolicy()


def _positive_int(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ValueError(f"must be a whole number of at least 1 (got {value!r})")
    return value


def _duration(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of seconds (got {value!r})")
    return float(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"must be true or false (got {value!r})")
    return value


def _severity(value: Any) -> Severity:
    if not isinstance(value, str) or value not in SEVERITIES:
        raise ValueError(f"{value!r} is not a severity; allowed: {', '.join(SEVERITIES)}")
    return Severity(value)


# The TenantPolicy fields a section sets directly, with how each is checked.
_SCALARS: dict[str, Callable[[Any], Any]] = {
    "monitor_only": _bool,
    "revoke_at": _severity,
    "corroborate_at": _severity,
    "corroborating_detectors": _positive_int,
    "dedup_window_s": _duration,
    "block_s": _duration,
}
_SCALAR_FIELDS = tuple(_SCALARS)
SECTION_KEYS = (*_SCALARS, "allowlist", "detectors")


class _Checker:
    """Collects problems while turning raw sections into partial policies (only the keys given)."""

    def __init__(self, source: str, registry: Registry) -> None:
        self.source = source
        self.registry = registry
        self.problems: list[str] = []

    def fail(self, path: str, problem: str) -> None:
        self.problems.append(f"{self.source}: {path}: {problem}")

    def keys(self, data: Mapping[Any, Any], path: str, allowed: Iterable[str], what: str) -> None:
        allowed = list(allowed)
        for key in data:
            if key not in allowed:
                hint = _did_you_mean(key, allowed)
                self.fail(_join(path, key), f"{what};{hint} "
                          + (f"known: {', '.join(allowed)}" if allowed else "there are none"))

    def mapping(self, value: Any, path: str) -> Mapping[Any, Any]:
        """`value` as a mapping; a missing or empty (null) section is an empty one."""
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping (got {_kind(value)})")
            return {}
        return value

    def value(self, raw: Mapping[Any, Any], key: str, path: str, convert: Callable[[Any], Any],
              into: dict[str, Any]) -> None:
        if key not in raw:
            return
        try:
            into[key] = convert(raw[key])
        except ValueError as e:
            self.fail(_join(path, key), str(e))

    def section(self, value: Any, path: str) -> dict[str, Any]:
        raw = self.mapping(value, path)
        self.keys(raw, path, SECTION_KEYS, "unknown key")
        part: dict[str, Any] = {}
        for key, convert in _SCALARS.items():
            self.value(raw, key, path, convert, part)
        if "allowlist" in raw:
            part["allowlist"] = self.allowlist(raw["allowlist"], _join(path, "allowlist"))
        if "detectors" in raw:
            part["detectors"] = self.detectors(raw["detectors"], _join(path, "detectors"))
        return part

    def allowlist(self, value: Any, path: str) -> dict[str, Any]:
        raw = self.mapping(value, path)
        self.keys(raw, path, ALLOWLIST_KEYS, "unknown key")
        part: dict[str, Any] = {}
        for key in ALLOWLIST_KEYS:
            if key not in raw:
                continue
            where = _join(path, key)
            items = raw[key]
            if not isinstance(items, list | tuple):
                self.fail(where, f"must be a list of strings (got {_kind(items)})")
                continue
            good: list[Any] = []
            for i, item in enumerate(items):
                if not isinstance(item, str) or not item.strip():
                    self.fail(f"{where}[{i}]", f"must be a non-empty string (got {item!r})")
                elif key == "cidrs":
                    net = self.cidr(item, f"{where}[{i}]")
                    if net is not None:
                        good.append(net)
                else:
                    good.append(item.strip())
            part[key] = tuple(good) if key == "cidrs" else frozenset(good)
        return part

    def cidr(self, item: str, path: str) -> IPNetwork | None:
        try:
            return ipaddress.ip_network(item.strip())
        except ValueError as e:
            try:
                hint = f"did you mean {ipaddress.ip_network(item.strip(), strict=False)}?"
            except ValueError:
                hint = "write e.g. 10.0.0.0/8, 2001:db8::/32 or a single address"
            self.fail(path, f"{item!r} is not a CIDR ({e}); {hint}")
            return None

    def detectors(self, value: Any, path: str) -> dict[str, dict[str, Any]]:
        raw = self.mapping(value, path)
        split = {k: v for k, v in raw.items() if k not in self.registry and isinstance(v, Mapping)
                 and any(f"{k}.{sub}" in self.registry for sub in v)}
        for key, parts in split.items():
            # TOML reads [default.detectors.session.ua_change] as nested tables "session", "ua_change".
            ids = [f"{key}.{sub}" for sub in parts if f"{key}.{sub}" in self.registry]
            self.fail(_join(path, key), f"unknown detector; did you mean {', '.join(ids)}? "
                      f'in TOML, quote the id: [{path}."{ids[0]}"]')
        self.keys({k: v for k, v in raw.items() if k not in split}, path, sorted(self.registry),
                  "unknown detector")
        out: dict[str, dict[str, Any]] = {}
        for detector_id, rule in raw.items():
            detector = self.registry.get(detector_id)
            if detector is not None:
                out[detector_id] = self.rule(detector, rule, _join(path, detector_id))
        return out

    def rule(self, detector: type[Detector[Any]], value: Any, path: str) -> dict[str, Any]:
        raw = self.mapping(value, path)
        self.keys(raw, path, RULE_KEYS, "unknown key")
        part: dict[str, Any] = {}
        self.value(raw, "enabled", path, _bool, part)
        self.value(raw, "severity", path, _severity, part)
        if "action" in raw:
            action = raw["action"]
            if isinstance(action, str) and action in detector.actions:
                part["action"] = action
            else:
                self.fail(_join(path, "action"), f"{action!r} is not an action of {detector.id}; "
                          f"allowed: {', '.join(detector.actions)}")
        if "params" in raw:
            part["params"] = self.params(detector, raw["params"], _join(path, "params"))
        return part

    def params(self, detector: type[Detector[Any]], value: Any, path: str) -> dict[str, Any]:
        raw = self.mapping(value, path)
        declared = _param_types(detector.Params)
        if detector.Params is NoParams or not declared:
            for key in raw:
                self.fail(_join(path, key), f"{detector.id} has no parameters")
            return {}
        self.keys(raw, path, declared, f"unknown parameter of {detector.id}")
        out: dict[str, Any] = {}
        for key, kind in declared.items():
            if key not in raw:
                continue
            try:
                out[key] = _convert_param(key, kind, raw[key])
            except ValueError as e:
                self.fail(_join(path, key), str(e))
        return out

    def tenant_policy(
        self, part: Mapping[str, Any], path: str, base: Mapping[str, Any] | None = None
    ) -> TenantPolicy:
        """The TenantPolicy of a (merged) partial; `base` is what it inherited from, if anything."""
        kwargs = {k: v for k, v in part.items() if k in _SCALARS}
        if "allowlist" in part:
            kwargs["allowlist"] = Allowlist(**part["allowlist"])
        rules = {}
        for detector_id, rule in part.get("detectors", {}).items():
            params = dict(rule.get("params", {}))
            rules[detector_id] = DetectorRule(**{**rule, "params": params})
            inherited = (base or {}).get("detectors", {}).get(detector_id, {}).get("params")
            if params and params != inherited:
                # Cross-field checks a detector's Params may make (__post_init__), per tenant, now
                # rather than at the first event.
                try:
                    dataclasses.replace(self.registry[detector_id].Params(), **params)
                except (TypeError, ValueError, ConfigError) as e:
                    self.fail(_join(path, f"detectors.{detector_id}.params"), str(e))
        return TenantPolicy(**kwargs, detectors=rules)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key, anything else (lists too) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_PARAM_SCALARS: dict[type, str] = {bool: "bool", int: "int", float: "float", str: "str"}


def _param_types(params: type[Any]) -> dict[str, Any]:
    if not dataclasses.is_dataclass(params):
        return {}
    try:
        hints = typing.get_type_hints(params)
    except Exception:  # an annotation that does not resolve: fall back to the declared text
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(params) if f.init}


def _convert_param(name: str, kind: Any, value: Any) -> Any:
    """`value` checked against the declared type `kind` (ValueError says what was expected)."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args:
        if value is None:
            return None
        rest = [a for a in args if a is not type(None)]
        kind = rest[0] if len(rest) == 1 else kind
        args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    if origin in (tuple, frozenset) and (origin is frozenset or (len(args) == 2 and args[1] is ...)):
        if not isinstance(value, list | tuple):
            raise ValueError(f"must be a list of {_type_name(args[0])} (got {value!r})")
        items = [_convert_param(name, args[0], v) for v in value]
        return tuple(items) if origin is tuple else frozenset(items)
    given = value
    if isinstance(kind, str):  # an unresolved annotation: match on the name
        kind = {v: k for k, v in _PARAM_SCALARS.items()}.get(kind, kind)
    if kind is bool:
        return _bool(value)
    if kind is int:
        if type(value) is not int:
            raise ValueError(f"must be an int (got {value!r})")
    elif kind is float:
        if type(value) not in (int, float) or not math.isfinite(value):
            raise ValueError(f"must be a float (got {value!r})")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ValueError(f"must be a str (got {value!r})")
    else:
        raise ValueError(f"cannot be set from a policy file (type {_type_name(kind)})")
    if name.endswith(DURATION_SUFFIXES) and value <= 0:
        raise ValueError(f"must be a positive duration (got {given!r})")
    return value


def _type_name(kind: Any) -> str:
    return kind.__name__ if isinstance(kind, type) else str(kind)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__)


def _did_you_mean(key: Any, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.75)
    return f" did you mean {close[0]}?" if close else ""


def _show(value: Any) -> str:
    if isinstance(value, tuple | frozenset):
        return f"[{', '.join(map(_show, value))}]"
    if isinstance(value, Severity):
        return value.value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).lower() if isinstance(value, bool) else str(value)


def _allowlist_size(a: Allowlist) -> str:
    return f"({len(a.cidrs)} CIDRs, {len(a.asns)} networks, {len(a.users)} users)"


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except a key given twice in one mapping is an error instead of last-one-wins
    (two entries for one detector would otherwise silently drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` - explicit keys may override merged ones
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # SafeLoader reports unhashable keys itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)
