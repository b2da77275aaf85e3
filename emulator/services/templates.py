"""AWS IoT fleet provisioning templates, evaluated the way IoT Core evaluates them at RegisterThing.

The emulator reads the very file an operator uploads to AWS (``config/fleet-provisioning-template.json``),
so a template that works here must be a valid AWS template and vice versa. Supported: ``Parameters``
(``Type`` ``String``/``Number``, ``Default``), ``Mappings``, ``Conditions``, ``Resources`` of the types
``AWS::IoT::Thing``, ``AWS::IoT::Certificate`` and ``AWS::IoT::Policy`` (with ``Condition`` and
``OverrideSettings``), ``DeviceConfiguration``, and the intrinsic functions ``Ref``, ``Fn::Join``,
``Fn::Select``, ``Fn::Split``, ``Fn::FindInMap``, ``Fn::Sub``, ``Fn::Base64``, ``Fn::If``, ``Fn::Equals``,
``Fn::Not``, ``Fn::And``, ``Fn::Or`` and the ``Condition`` reference, plus ``AWS::NoValue``.

Everything wrong with a template or its parameters raises :class:`TemplateError` (never anything
else), naming the JSON path of the offending node.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_TEMPLATE_BYTES = 10 * 1024  # IoT Core template body limit (LIM20)
MAX_DEPTH = 32  # nesting of intrinsic functions; guards recursion on hostile input
MAX_VALUE_CHARS = 64 * 1024  # no evaluated string may grow beyond this
CERT_ID_PARAM = "AWS::IoT::Certificate::Id"
NO_VALUE = "AWS::NoValue"

THING_NAME_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
ATTR_NAME_RE = re.compile(r"^[a-zA-Z0-9_.,@/:#-]{1,128}$")
ATTR_VALUE_RE = re.compile(r"^[a-zA-Z0-9_.,@/:#=\[\]-]{0,800}$")
GROUP_NAME_RE = re.compile(r"^[a-zA-Z0-9:_-]{1,128}$")
POLICY_NAME_RE = re.compile(r"^[\w+=,.@-]{1,128}$")
PARAM_TYPES = ("String", "Number")
RESOURCE_TYPES = ("AWS::IoT::Thing", "AWS::IoT::Certificate", "AWS::IoT::Policy")
OVERRIDE_ACTIONS = ("DO_NOTHING", "REPLACE", "FAIL", "MERGE")
THING_OVERRIDABLE = {"AttributePayload", "ThingTypeName", "ThingGroups", "BillingGroup"}
CERT_STATUSES = ("ACTIVE", "INACTIVE")
_SUB_VAR = re.compile(r"\$\{([^}]*)\}")


class TemplateError(ValueError):
    """A template that cannot be evaluated, or parameters it rejects.

    ``parameter_problem`` distinguishes what the device sent wrong (missing or invalid parameters:
    the device's fault) from what the template author wrote wrong."""

    def __init__(self, message: str, path: str = "", *, parameter_problem: bool = False) -> None:
        self.path = path
        self.parameter_problem = parameter_problem
        super().__init__(f"{path}: {message}" if path else message)


@dataclass(frozen=True)
class ThingSpec:
    logical_name: str
    thing_name: str
    attributes: dict[str, str] = field(default_factory=dict)
    thing_groups: tuple[str, ...] = ()
    thing_type_name: str | None = None
    billing_group: str | None = None
    override_settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CertificateSpec:
    logical_name: str
    certificate_id: str
    status: str = "ACTIVE"
    override_settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicySpec:
    logical_name: str
    policy_name: str | None = None
    policy_document: dict[str, Any] | None = None


@dataclass(frozen=True)
class Plan:
    """What RegisterThing must create: the evaluated template."""

    thing: ThingSpec | None
    certificate: CertificateSpec | None
    policies: tuple[PolicySpec, ...]
    device_configuration: dict[str, str]
    parameters: dict[str, str]


class _NoValue:
    """Marker for ``{"Ref": "AWS::NoValue"}``: the enclosing property disappears."""


_NOVALUE = _NoValue()


def load_template(text: str | bytes, source: str = "template") -> dict[str, Any]:
    """Parse and structurally check a template body before it is ever used."""
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > MAX_TEMPLATE_BYTES:
        raise TemplateError(f"template body is {len(raw)} bytes, IoT Core allows {MAX_TEMPLATE_BYTES}", source)
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TemplateError(f"not valid JSON: {exc}", source) from None
    check_template(doc)
    return doc


def check_template(doc: Any) -> None:
    """Static checks every template must pass, independent of parameters."""
    if not isinstance(doc, dict):
        raise TemplateError("template must be a JSON object")
    allowed = {"AWSTemplateFormatVersion", "Description", "Parameters", "Mappings", "Conditions",
               "Resources", "DeviceConfiguration"}
    for key in doc:
        if key not in allowed:
            raise TemplateError(f"unknown top-level section {key!r}", str(key))
    params = doc.get("Parameters", {})
    if not isinstance(params, dict):
        raise TemplateError("must be an object", "Parameters")
    for name, spec in params.items():
        where = f"Parameters.{name}"
        if not isinstance(spec, dict):
            raise TemplateError("must be an object with Type", where)
        if spec.get("Type") not in PARAM_TYPES:
            raise TemplateError(f"Type must be one of {', '.join(PARAM_TYPES)}", where)
        if "Default" in spec and not isinstance(spec["Default"], str | int | float):
            raise TemplateError("Default must be a string or number", where)
        for key in spec:
            if key not in ("Type", "Default", "Description", "AllowedValues", "AllowedPattern"):
                raise TemplateError(f"unknown key {key!r}", where)
    mappings = doc.get("Mappings", {})
    if not isinstance(mappings, dict):
        raise TemplateError("must be an object", "Mappings")
    for mname, top in mappings.items():
        if not isinstance(top, dict) or not all(isinstance(v, dict) for v in top.values()):
            raise TemplateError("a mapping is a two-level object", f"Mappings.{mname}")
    if not isinstance(doc.get("Conditions", {}), dict):
        raise TemplateError("must be an object", "Conditions")
    resources = doc.get("Resources")
    if not isinstance(resources, dict) or not resources:
        raise TemplateError("a template needs a non-empty Resources object", "Resources")
    counts: dict[str, int] = {}
    for lname, res in resources.items():
        where = f"Resources.{lname}"
        if not isinstance(res, dict):
            raise TemplateError("must be an object", where)
        rtype = res.get("Type")
        if rtype not in RESOURCE_TYPES:
            raise TemplateError(f"Type must be one of {', '.join(RESOURCE_TYPES)}", where)
        counts[rtype] = counts.get(rtype, 0) + 1
        if not isinstance(res.get("Properties", {}), dict):
            raise TemplateError("Properties must be an object", where)
        cond = res.get("Condition")
        if cond is not None and (not isinstance(cond, str) or cond not in doc.get("Conditions", {})):
            raise TemplateError(f"Condition {cond!r} is not declared in Conditions", where)
        overrides = res.get("OverrideSettings", {})
        if not isinstance(overrides, dict):
            raise TemplateError("OverrideSettings must be an object", where)
        for prop, action in overrides.items():
            if action not in OVERRIDE_ACTIONS:
                raise TemplateError(f"OverrideSettings.{prop} must be one of {', '.join(OVERRIDE_ACTIONS)}", where)
            if rtype == "AWS::IoT::Policy":
                raise TemplateError("OverrideSettings are not available for policy resources", where)
            if action == "MERGE" and prop not in ("AttributePayload", "ThingGroups"):
                raise TemplateError(f"MERGE is valid only for AttributePayload and ThingGroups, not {prop}", where)
    for rtype in ("AWS::IoT::Thing", "AWS::IoT::Certificate"):
        if counts.get(rtype, 0) > 1:
            raise TemplateError(f"at most one {rtype} resource is allowed", "Resources")
    dc = doc.get("DeviceConfiguration", {})
    if not isinstance(dc, dict):
        raise TemplateError("must be an object", "DeviceConfiguration")


class _Evaluator:
    def __init__(self, doc: Mapping[str, Any], params: dict[str, str]) -> None:
        self.doc = doc
        self.params = params
        self.mappings: Mapping[str, Any] = doc.get("Mappings", {})
        self.conditions: Mapping[str, Any] = doc.get("Conditions", {})
        self._cond_cache: dict[str, bool] = {}
        self._cond_stack: list[str] = []

    def condition(self, name: str, path: str) -> bool:
        if name in self._cond_cache:
            return self._cond_cache[name]
        if name not in self.conditions:
            raise TemplateError(f"unknown condition {name!r}", path)
        if name in self._cond_stack:
            raise TemplateError(f"condition {name!r} refers to itself", path)
        self._cond_stack.append(name)
        try:
            value = self.value(self.conditions[name], f"Conditions.{name}", 0)
        finally:
            self._cond_stack.pop()
        if not isinstance(value, bool):
            raise TemplateError("a condition must evaluate to a boolean (Fn::Equals/Not/And/Or)",
                                f"Conditions.{name}")
        self._cond_cache[name] = value
        return value

    def string(self, node: Any, path: str, depth: int) -> str:
        v = self.value(node, path, depth)
        if isinstance(v, bool) or not isinstance(v, str | int | float):
            raise TemplateError("expected a string", path)
        return str(v)

    def value(self, node: Any, path: str, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise TemplateError(f"nested deeper than {MAX_DEPTH}", path)
        if isinstance(node, list):
            out = []
            for i, item in enumerate(node):
                v = self.value(item, f"{path}[{i}]", depth + 1)
                if v is not _NOVALUE:
                    out.append(v)
            return out
        if not isinstance(node, dict):
            if isinstance(node, str) and len(node) > MAX_VALUE_CHARS:
                raise TemplateError("string too long", path)
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self.function(key, arg, f"{path}.{key}", depth + 1)
        out_map: dict[str, Any] = {}
        for k, v in node.items():
            ev = self.value(v, f"{path}.{k}", depth + 1)
            if ev is not _NOVALUE:
                out_map[k] = ev
        return out_map

    def _args(self, arg: Any, n: int, path: str) -> list[Any]:
        if not isinstance(arg, list) or len(arg) != n:
            raise TemplateError(f"takes a list of {n} arguments", path)
        return arg

    def function(self, name: str, arg: Any, path: str, depth: int) -> Any:
        if name == "Ref":
            if not isinstance(arg, str):
                raise TemplateError("Ref takes a parameter name", path)
            if arg == NO_VALUE:
                return _NOVALUE
            if arg not in self.params:
                raise TemplateError(f"Ref to undeclared parameter {arg!r}", path)
            return self.params[arg]
        if name == "Condition":
            if not isinstance(arg, str):
                raise TemplateError("Condition takes a condition name", path)
            return self.condition(arg, path)
        if name == "Fn::Join":
            delim, items = self._args(arg, 2, path)
            d = self.string(delim, f"{path}[0]", depth)
            lst = self.value(items, f"{path}[1]", depth)
            if not isinstance(lst, list):
                raise TemplateError("second argument must be a list", path)
            parts = [self.string(x, f"{path}[1][{i}]", depth) for i, x in enumerate(lst)]
            return self._bounded(d.join(parts), path)
        if name == "Fn::Select":
            index, items = self._args(arg, 2, path)
            idx_s = self.string(index, f"{path}[0]", depth)
            try:
                idx = int(idx_s)
            except ValueError:
                raise TemplateError(f"index {idx_s!r} is not an integer", path) from None
            lst = self.value(items, f"{path}[1]", depth)
            if not isinstance(lst, list):
                raise TemplateError("second argument must be a list", path)
            if not 0 <= idx < len(lst):
                raise TemplateError(f"index {idx} out of range for a list of {len(lst)}", path)
            if lst[idx] is None:
                raise TemplateError(f"element {idx} is null", path)
            return lst[idx]
        if name == "Fn::Split":
            delim, source = self._args(arg, 2, path)
            d = self.string(delim, f"{path}[0]", depth)
            if not d:
                raise TemplateError("delimiter must not be empty", path)
            return self.string(source, f"{path}[1]", depth).split(d)
        if name == "Fn::FindInMap":
            mname, top, second = (self.string(a, f"{path}[{i}]", depth)
                                  for i, a in enumerate(self._args(arg, 3, path)))
            try:
                found = self.mappings[mname][top][second]
            except (KeyError, TypeError):
                raise TemplateError(f"no entry [{mname!r}][{top!r}][{second!r}] in Mappings", path,
                                    parameter_problem=True) from None
            return found
        if name == "Fn::Sub":
            return self.sub(arg, path, depth)
        if name == "Fn::Base64":
            return base64.b64encode(self.string(arg, path, depth).encode()).decode()
        if name == "Fn::If":
            cond, when_true, when_false = self._args(arg, 3, path)
            if not isinstance(cond, str):
                raise TemplateError("first argument must be a condition name", path)
            chosen = when_true if self.condition(cond, path) else when_false
            return self.value(chosen, path, depth)
        if name == "Fn::Equals":
            a, b = (self.value(x, f"{path}[{i}]", depth) for i, x in enumerate(self._args(arg, 2, path)))
            return a == b
        if name in ("Fn::Not", "Fn::And", "Fn::Or"):
            if not isinstance(arg, list):
                raise TemplateError("takes a list of conditions", path)
            if name == "Fn::Not" and len(arg) != 1:
                raise TemplateError("takes exactly one condition", path)
            if name != "Fn::Not" and not 2 <= len(arg) <= 10:
                raise TemplateError("takes between 2 and 10 conditions", path)
            vals = []
            for i, x in enumerate(arg):
                v = self.value(x, f"{path}[{i}]", depth)
                if not isinstance(v, bool):
                    raise TemplateError("operands must be conditions", f"{path}[{i}]")
                vals.append(v)
            if name == "Fn::Not":
                return not vals[0]
            return all(vals) if name == "Fn::And" else any(vals)
        raise TemplateError(f"unsupported intrinsic function {name}", path)

    def sub(self, arg: Any, path: str, depth: int) -> str:
        variables: dict[str, str] = {}
        if isinstance(arg, list):
            text, var_map = self._args(arg, 2, path)
            if not isinstance(var_map, dict):
                raise TemplateError("second argument must be an object of variables", path)
            for k, v in var_map.items():
                variables[str(k)] = self.string(v, f"{path}[1].{k}", depth)
        else:
            text = arg
        if not isinstance(text, str):
            raise TemplateError("template string must be a string", path)

        def repl(m: re.Match[str]) -> str:
            var = m.group(1)
            if var.startswith("!"):
                return "${" + var[1:] + "}"
            if var in variables:
                return variables[var]
            if var in self.params:
                return self.params[var]
            raise TemplateError(f"${{{var}}} is neither a parameter nor a Sub variable", path)

        return self._bounded(_SUB_VAR.sub(repl, text), path)

    @staticmethod
    def _bounded(s: str, path: str) -> str:
        if len(s) > MAX_VALUE_CHARS:
            raise TemplateError("evaluated string too long", path)
        return s


def _resolve_parameters(doc: Mapping[str, Any], given: Mapping[str, Any], certificate_id: str) -> dict[str, str]:
    declared: Mapping[str, Any] = doc.get("Parameters", {})
    out: dict[str, str] = {}
    for name, spec in declared.items():
        where = f"Parameters.{name}"
        if name == CERT_ID_PARAM:
            out[name] = certificate_id
            continue
        if name in given:
            val = given[name]
            if not isinstance(val, str):
                raise TemplateError(f"parameter {name!r} must be a string", where, parameter_problem=True)
        elif "Default" in spec:
            val = str(spec["Default"])
        else:
            raise TemplateError(f"missing required parameter {name!r}", where, parameter_problem=True)
        if spec.get("Type") == "Number":
            try:
                float(val)
            except ValueError:
                raise TemplateError(f"parameter {name!r} must be a number", where, parameter_problem=True) from None
        allowed = spec.get("AllowedValues")
        if isinstance(allowed, list) and val not in [str(a) for a in allowed]:
            raise TemplateError(f"parameter {name!r} is not one of the allowed values", where,
                                parameter_problem=True)
        pattern = spec.get("AllowedPattern")
        if isinstance(pattern, str):
            try:
                ok = re.fullmatch(pattern, val) is not None
            except re.error:
                raise TemplateError("AllowedPattern is not a valid regular expression", where) from None
            if not ok:
                raise TemplateError(f"parameter {name!r} does not match {pattern}", where, parameter_problem=True)
        out[name] = val
    for name in given:
        if name not in declared:
            raise TemplateError(f"unknown parameter {name!r}: the template does not declare it", "parameters",
                                parameter_problem=True)
    return out


def _as_str(v: Any, path: str) -> str:
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise TemplateError("expected a string", path)
    return str(v)


def _thing(lname: str, props: Mapping[str, Any], overrides: dict[str, str], path: str) -> ThingSpec:
    for key in props:
        if key not in ("ThingName", "AttributePayload", "ThingGroups", "ThingTypeName", "BillingGroup"):
            raise TemplateError(f"unknown thing property {key!r}", path)
    if "ThingName" not in props:
        raise TemplateError("a thing needs ThingName", path)
    name = _as_str(props["ThingName"], f"{path}.ThingName")
    if not THING_NAME_RE.match(name):
        raise TemplateError(f"thing name {name!r} is invalid (1-128 of [a-zA-Z0-9:_-])", f"{path}.ThingName",
                            parameter_problem=True)
    attrs_in = props.get("AttributePayload", {})
    if not isinstance(attrs_in, dict):
        raise TemplateError("must be an object", f"{path}.AttributePayload")
    attrs: dict[str, str] = {}
    for k, v in attrs_in.items():
        vs = _as_str(v, f"{path}.AttributePayload.{k}")
        if not ATTR_NAME_RE.match(k):
            raise TemplateError(f"attribute name {k!r} is invalid", f"{path}.AttributePayload")
        if not ATTR_VALUE_RE.match(vs):
            raise TemplateError(f"attribute {k!r} has an invalid value {vs!r}", f"{path}.AttributePayload.{k}",
                                parameter_problem=True)
        attrs[k] = vs
    groups_in = props.get("ThingGroups", [])
    if not isinstance(groups_in, list):
        raise TemplateError("must be a list", f"{path}.ThingGroups")
    groups = tuple(_as_str(g, f"{path}.ThingGroups[{i}]") for i, g in enumerate(groups_in))
    for g in groups:
        if not GROUP_NAME_RE.match(g):
            raise TemplateError(f"thing group name {g!r} is invalid", f"{path}.ThingGroups", parameter_problem=True)
    ttype = props.get("ThingTypeName")
    billing = props.get("BillingGroup")
    for key in overrides:
        if key not in THING_OVERRIDABLE:
            raise TemplateError(f"OverrideSettings.{key} is not an overridable thing property", path)
    return ThingSpec(
        logical_name=lname, thing_name=name, attributes=attrs, thing_groups=groups,
        thing_type_name=None if ttype is None else _as_str(ttype, f"{path}.ThingTypeName"),
        billing_group=None if billing is None else _as_str(billing, f"{path}.BillingGroup"),
        override_settings=overrides,
    )


def _certificate(lname: str, props: Mapping[str, Any], overrides: dict[str, str], path: str,
                 certificate_id: str) -> CertificateSpec:
    for key in props:
        if key not in ("CertificateId", "Status"):
            # CSR/PEM forms exist for JITP and bulk registration only, not for fleet provisioning.
            raise TemplateError(f"{key!r}: fleet provisioning templates identify the certificate by "
                                "CertificateId only", path)
    if "CertificateId" not in props:
        raise TemplateError("a certificate needs CertificateId (Ref AWS::IoT::Certificate::Id)", path)
    cid = _as_str(props["CertificateId"], f"{path}.CertificateId")
    if cid != certificate_id:
        raise TemplateError("CertificateId must be the certificate of the ownership token", f"{path}.CertificateId",
                            parameter_problem=True)
    status = _as_str(props.get("Status", "ACTIVE"), f"{path}.Status").upper()
    if status not in CERT_STATUSES:
        raise TemplateError(f"Status must be ACTIVE or INACTIVE, not {status!r}", f"{path}.Status")
    for key in overrides:
        if key != "Status":
            raise TemplateError(f"OverrideSettings.{key}: only Status can be overridden on a certificate", path)
    return CertificateSpec(logical_name=lname, certificate_id=cid, status=status, override_settings=overrides)


def _policy(lname: str, props: Mapping[str, Any], path: str) -> PolicySpec:
    has_name, has_doc = "PolicyName" in props, "PolicyDocument" in props
    if has_name == has_doc:
        raise TemplateError("a policy needs exactly one of PolicyName or PolicyDocument", path)
    if has_name:
        pname = _as_str(props["PolicyName"], f"{path}.PolicyName")
        if not POLICY_NAME_RE.match(pname):
            raise TemplateError(f"policy name {pname!r} is invalid", f"{path}.PolicyName")
        return PolicySpec(logical_name=lname, policy_name=pname)
    raw = props["PolicyDocument"]
    if isinstance(raw, str):  # AWS accepts the document as an escaped JSON string too
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise TemplateError("PolicyDocument is not valid JSON", f"{path}.PolicyDocument") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("Statement"), list):
        raise TemplateError("PolicyDocument must be an object with a Statement list", f"{path}.PolicyDocument")
    return PolicySpec(logical_name=lname, policy_document=raw)


def evaluate(doc: Mapping[str, Any], parameters: Mapping[str, Any], certificate_id: str) -> Plan:
    """Evaluate ``doc`` (already structurally checked) for one RegisterThing request."""
    check_template(doc)
    if not isinstance(parameters, Mapping):
        raise TemplateError("parameters must be an object of strings", "parameters", parameter_problem=True)
    params = _resolve_parameters(doc, parameters, certificate_id)
    ev = _Evaluator(doc, params)
    thing: ThingSpec | None = None
    cert: CertificateSpec | None = None
    policies: list[PolicySpec] = []
    for lname, res in doc["Resources"].items():
        path = f"Resources.{lname}"
        if "Condition" in res and not ev.condition(res["Condition"], path):
            continue
        props = ev.value(res.get("Properties", {}), f"{path}.Properties", 0)
        if not isinstance(props, dict):
            raise TemplateError("Properties must evaluate to an object", path)
        overrides = dict(res.get("OverrideSettings", {}))
        if res["Type"] == "AWS::IoT::Thing":
            thing = _thing(lname, props, overrides, f"{path}.Properties")
        elif res["Type"] == "AWS::IoT::Certificate":
            cert = _certificate(lname, props, overrides, f"{path}.Properties", certificate_id)
        else:
            policies.append(_policy(lname, props, f"{path}.Properties"))
    dc_raw = ev.value(doc.get("DeviceConfiguration", {}), "DeviceConfiguration", 0)
    if not isinstance(dc_raw, dict):
        raise TemplateError("must evaluate to an object", "DeviceConfiguration")
    device_configuration = {str(k): _as_str(v, f"DeviceConfiguration.{k}") for k, v in dc_raw.items()}
    return Plan(thing=thing, certificate=cert, policies=tuple(policies),
                device_configuration=device_configuration, parameters=params)
