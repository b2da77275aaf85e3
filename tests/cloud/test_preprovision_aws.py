"""The hook's AWS side against moto: the IoT registry port, the DynamoDB allowlist and the Lambda
handler wired from its environment."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from cloud.preprovision import aws
from cloud.preprovision.allowlist import DynamoDbAllowlist
from cloud.preprovision.ports import AllowEntry, LookupFailed, ThingView

REGION = "eu-west-1"
TABLE = "methane-serial-allowlist"


@pytest.fixture
def aws_env(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(aws, "_ports", None)  # the Lambda's per-container clients
    with mock_aws():
        yield


def make_table(ddb, *items: dict) -> None:
    ddb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "serial", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "serial", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    for item in items:
        ddb.put_item(TableName=TABLE, Item=item)


def make_thing(iot, name: str, site: str) -> str:
    iot.create_thing(thingName=name, attributePayload={"attributes": {"site": site}})
    cert = iot.create_keys_and_certificate(setAsActive=True)
    iot.attach_thing_principal(thingName=name, principal=cert["certificateArn"])
    return str(cert["certificateId"])


def test_iot_thing_directory(aws_env):
    iot = boto3.client("iot", region_name=REGION)
    cert_id = make_thing(iot, "methane-A1", "north")
    directory = aws.IotThingDirectory(iot)
    assert directory.describe("methane-A1") == ThingView(frozenset({cert_id}), {"site": "north"})
    assert directory.describe("methane-none") is None


def test_dynamodb_allowlist(aws_env):
    ddb = boto3.client("dynamodb", region_name=REGION)
    make_table(ddb, {"serial": {"S": "A1"}}, {"serial": {"S": "B2"}, "site": {"S": "north-7"}},
               {"serial": {"S": "C3"}, "site": {"S": "bad/site"}})
    allow = DynamoDbAllowlist(ddb, TABLE)
    assert allow.lookup("A1") == AllowEntry("A1")
    assert allow.lookup("B2") == AllowEntry("B2", "north-7")
    assert allow.lookup("Z9") is None
    with pytest.raises(LookupFailed, match="invalid"):
        allow.lookup("C3")
    with pytest.raises(LookupFailed, match="no-such-table"):
        DynamoDbAllowlist(ddb, "no-such-table").lookup("A1")


def test_lambda_handler_end_to_end(aws_env, monkeypatch):
    iot = boto3.client("iot", region_name=REGION)
    ddb = boto3.client("dynamodb", region_name=REGION)
    claim = iot.create_keys_and_certificate(setAsActive=True)["certificateId"]
    victim = make_thing(iot, "methane-B2", "south")
    attacker = make_thing(iot, "methane-A1", "north")
    make_table(ddb, {"serial": {"S": "N3"}, "site": {"S": "east"}}, {"serial": {"S": "B2"}})
    monkeypatch.setenv("CLAIM_CERTIFICATE_IDS", f" {claim} ,")
    monkeypatch.setenv("ALLOWLIST_TABLE", TABLE)
    new_cert = "e" * 64

    def ev(requester: str, serial: str, **params: str) -> dict:
        return {"claimCertificateId": requester, "certificateId": new_cert, "certificatePem": "x",
                "templateArn": "arn:aws:iot:eu-west-1:123456789012:provisioningtemplate/methane-fleet",
                "clientId": "c", "parameters": {"SerialNumber": serial, **params}}

    assert aws.handler(ev(claim, "N3", SiteId="west"), None) == {
        "allowProvisioning": True, "parameterOverrides": {"SiteId": "east"}}
    assert aws.handler(ev(claim, "Z9"), None)["allowProvisioning"] is False  # not on the allowlist
    assert aws.handler(ev(claim, "B2"), None)["allowProvisioning"] is False  # exists: claim may not
    assert aws.handler(ev(attacker, "B2"), None)["allowProvisioning"] is False  # foreign device
    assert aws.handler(ev(victim, "B2", SiteId="north"), None) == {
        "allowProvisioning": True, "parameterOverrides": {"SiteId": "south"}}  # rotation keeps the site


def test_lambda_without_table_refuses_to_start(aws_env, monkeypatch):
    monkeypatch.delenv("ALLOWLIST_TABLE", raising=False)
    with pytest.raises(RuntimeError, match="ALLOWLIST_TABLE"):
        aws.handler({}, None)
