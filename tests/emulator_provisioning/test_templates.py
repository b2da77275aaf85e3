"""The provisioning template evaluator: AWS's format, intrinsic functions, clear errors, fuzzed."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.services import templates as t

CID = "ab" * 32
REPO = Path(__file__).resolve().parents[2]


def tmpl(resources=None, **sections):
    doc = {"Resources": resources or {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "x"}}}}
    doc.update(sections)
    return doc


def dc(value, params=None, **sections):
    """Evaluate ``value`` as DeviceConfiguration.v."""
    decl = {k: {"Type": "String"} for k in (params or {})}
    doc = tmpl(Parameters=decl, DeviceConfiguration={"v": value}, **sections)
    return t.evaluate(doc, params or {}, CID).device_configuration["v"]


def test_project_template_is_valid_and_small():
    raw = (REPO / "config/fleet-provisioning-template.json").read_bytes()
    assert len(raw) <= t.MAX_TEMPLATE_BYTES
    plan = t.evaluate(t.load_template(raw), {"SerialNumber": "9", "SiteId": "test", "Model": "dynament"}, CID)
    assert plan.thing.thing_name == "methane-9" and plan.thing.thing_groups == ("methane-test", "test")
    fleet = t.evaluate(t.load_template(raw), {"SerialNumber": "9", "SiteId": "site-4"}, CID)
    assert fleet.thing.thing_groups == ("methane-fleet", "site-4")  # the fleet's group and the site's
    assert plan.certificate.certificate_id == CID and plan.certificate.status == "ACTIVE"
    assert plan.policies[0].policy_name == "methane-device"
    assert plan.device_configuration["sampleIntervalS"] == "2"


@pytest.mark.parametrize("expr, params, expected", [
    ({"Ref": "A"}, {"A": "x"}, "x"),
    ({"Fn::Join": ["-", ["a", {"Ref": "A"}, "c"]]}, {"A": "b"}, "a-b-c"),
    ({"Fn::Select": ["1", {"Fn::Split": [",", "p,q,r"]}]}, {}, "q"),
    ({"Fn::Select": [0, ["only"]]}, {}, "only"),
    ({"Fn::Sub": "s-${A}-${!Literal}"}, {"A": "1"}, "s-1-${Literal}"),
    ({"Fn::Sub": ["${X}/${A}", {"X": {"Ref": "A"}}]}, {"A": "k"}, "k/k"),
    ({"Fn::Base64": "hi"}, {}, "aGk="),
    ({"Fn::FindInMap": ["M", {"Ref": "A"}, "v"]}, {"A": "k"}, "mapped"),
    ({"Fn::If": ["C", "yes", "no"]}, {"A": "on"}, "yes"),
    ({"Fn::If": ["C", "yes", "no"]}, {"A": "off"}, "no"),
])
def test_intrinsics(expr, params, expected):
    sections = {"Mappings": {"M": {"k": {"v": "mapped"}}},
                "Conditions": {"C": {"Fn::And": [{"Fn::Equals": [{"Ref": "A"}, "on"]},
                                                 {"Fn::Not": [{"Fn::Equals": ["a", "b"]}]}]}}}
    decl = {"A": {"Type": "String", "Default": "off"}}
    doc = tmpl(Parameters=decl, DeviceConfiguration={"v": expr}, **sections)
    assert t.evaluate(doc, params, CID).device_configuration["v"] == expected


def test_conditions_skip_resources_and_novalue_drops_properties():
    doc = {
        "Parameters": {"P": {"Type": "String", "Default": "n"}},
        "Conditions": {"Yes": {"Fn::Equals": [{"Ref": "P"}, "y"]}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {
                "ThingName": "t1", "ThingTypeName": {"Fn::If": ["Yes", "typ", {"Ref": "AWS::NoValue"}]}}},
            "pol": {"Type": "AWS::IoT::Policy", "Condition": "Yes", "Properties": {"PolicyName": "p"}},
        },
    }
    plan = t.evaluate(doc, {}, CID)
    assert plan.thing.thing_type_name is None and plan.policies == ()
    plan = t.evaluate(doc, {"P": "y"}, CID)
    assert plan.thing.thing_type_name == "typ" and plan.policies[0].policy_name == "p"


def test_inline_policy_document_as_escaped_string():
    doc = tmpl({"p": {"Type": "AWS::IoT::Policy", "Properties": {
        "PolicyDocument": json.dumps({"Version": "2012-10-17", "Statement": []})}}})
    assert t.evaluate(doc, {}, CID).policies[0].policy_document == {"Version": "2012-10-17", "Statement": []}


@pytest.mark.parametrize("doc, fragment", [
    ([], "JSON object"),
    ({"Resources": {}}, "non-empty Resources"),
    ({"Bogus": 1, "Resources": {"a": {"Type": "AWS::IoT::Thing"}}}, "unknown top-level section 'Bogus'"),
    (tmpl({"a": {"Type": "AWS::S3::Bucket"}}), "Resources.a: Type must be one of"),
    (tmpl(Parameters={"P": {"Type": "List"}}), "Parameters.P: Type must be one of"),
    (tmpl({"a": {"Type": "AWS::IoT::Thing", "Condition": "Nope"}}), "Condition 'Nope' is not declared"),
    (tmpl({"a": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "x", "PolicyDocument": {}}}}),
     "exactly one of PolicyName or PolicyDocument"),
    (tmpl({"a": {"Type": "AWS::IoT::Thing", "OverrideSettings": {"ThingTypeName": "MERGE"}}}), "MERGE is valid only"),
    (tmpl(DeviceConfiguration={"v": {"Fn::GetAZs": ""}}), "unsupported intrinsic function Fn::GetAZs"),
    (tmpl(DeviceConfiguration={"v": {"Ref": "Missing"}}), "DeviceConfiguration.v.Ref: Ref to undeclared parameter"),
    (tmpl(DeviceConfiguration={"v": {"Fn::Select": ["5", ["a"]]}}), "index 5 out of range"),
    (tmpl(DeviceConfiguration={"v": {"Fn::Join": ["-"]}}), "takes a list of 2 arguments"),
    (tmpl(DeviceConfiguration={"v": {"Fn::If": ["C", "a", "b"]}},
          Conditions={"C": {"Condition": "D"}, "D": {"Condition": "C"}}), "refers to itself"),
    (tmpl(DeviceConfiguration={"v": ["a"]}), "DeviceConfiguration.v: expected a string"),
])
def test_bad_templates_name_the_problem(doc, fragment):
    with pytest.raises(t.TemplateError) as exc:
        t.evaluate(doc, {}, CID)
    assert fragment in str(exc.value)
    assert not exc.value.parameter_problem


@pytest.mark.parametrize("params, fragment", [
    ({}, "missing required parameter 'S'"),
    ({"S": 5}, "must be a string"),
    ({"S": "a", "X": "b"}, "unknown parameter 'X'"),
    ({"S": "bad name!"}, "thing name"),
])
def test_bad_parameters_are_the_devices_fault(params, fragment):
    doc = tmpl({"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "S"}}}},
               Parameters={"S": {"Type": "String"}})
    with pytest.raises(t.TemplateError) as exc:
        t.evaluate(doc, params, CID)
    assert fragment in str(exc.value) and exc.value.parameter_problem


def test_oversized_and_invalid_json_bodies():
    with pytest.raises(t.TemplateError, match="IoT Core allows 10240"):
        t.load_template(b" " * 10241)
    with pytest.raises(t.TemplateError, match="not valid JSON"):
        t.load_template(b"{")


def test_deep_nesting_is_an_error_not_a_crash():
    expr: object = "x"
    for _ in range(200):
        expr = {"Fn::Join": ["", [expr]]}
    with pytest.raises(t.TemplateError, match="nested deeper"):
        dc(expr)


FUNCS = ["Ref", "Fn::Join", "Fn::Select", "Fn::Split", "Fn::FindInMap", "Fn::Sub", "Fn::Base64", "Fn::If",
         "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition", "Fn::Nope"]
leaf = st.one_of(st.text(max_size=8), st.integers(-3, 3), st.booleans(), st.none(), st.sampled_from(["P", "C", "M"]))
json_like = st.recursive(
    leaf,
    lambda kids: st.one_of(st.lists(kids, max_size=4),
                           st.dictionaries(st.sampled_from(FUNCS), kids, min_size=1, max_size=1),
                           st.dictionaries(st.text(max_size=5), kids, max_size=3)),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(expr=json_like, params=st.dictionaries(st.sampled_from(["P", "Q"]), st.text(max_size=6), max_size=2))
def test_fuzz_evaluator_only_raises_template_error(expr, params):
    doc = {"Parameters": {"P": {"Type": "String", "Default": "d"}},
           "Mappings": {"M": {"d": {"P": "v"}}},
           "Conditions": {"C": {"Fn::Equals": [{"Ref": "P"}, "d"]}},
           "Resources": {"thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": expr}}},
           "DeviceConfiguration": {"v": expr}}
    try:
        plan = t.evaluate(doc, params, CID)
    except t.TemplateError:
        return
    assert t.THING_NAME_RE.match(plan.thing.thing_name)


@settings(max_examples=200, deadline=None)
@given(doc=json_like)
def test_fuzz_whole_documents(doc):
    with contextlib.suppress(t.TemplateError):
        t.evaluate(doc, {}, CID)
