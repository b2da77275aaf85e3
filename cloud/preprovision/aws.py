"""The hook as an AWS Lambda: ``cloud.preprovision.aws.handler``.

Environment:

| variable | meaning |
|---|---|
| `CLAIM_CERTIFICATE_IDS` | comma-separated certificate ids of the fleet's claim certificate(s); empty = no new things |
| `ALLOWLIST_TABLE` | DynamoDB table of serials allowed to onboard (partition key `serial`, optional `site`) |
| `THING_NAME_FORMAT` | thing name from the serial, as the template builds it (default `methane-{serial}`) |

The function needs ``iot:DescribeThing``, ``iot:ListThingPrincipals`` (on the fleet's things) and
``dynamodb:GetItem`` (on the table); nothing else. Clients use short timeouts and one retry: IoT
Core fails the request if the hook takes more than 5 s, and a hook that cannot answer denies.
"""

from __future__ import annotations

import os
from typing import Any

from cloud.preprovision.allowlist import DynamoDbAllowlist
from cloud.preprovision.hook import HookConfig, respond
from cloud.preprovision.ports import LookupFailed, ThingView

CLIENT_TIMEOUTS = {"connect_timeout": 1.0, "read_timeout": 1.5, "retries": {"max_attempts": 2, "mode": "standard"}}


class IotThingDirectory:
    """The IoT registry through ``describe_thing`` and ``list_thing_principals`` (boto3 ``iot``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def describe(self, thing_name: str) -> ThingView | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            thing = self.client.describe_thing(thingName=thing_name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
                return None
            raise LookupFailed(f"DescribeThing {thing_name}: {exc}") from None
        except BotoCoreError as exc:
            raise LookupFailed(f"DescribeThing {thing_name}: {exc}") from None
        principals: set[str] = set()
        try:
            for page in self.client.get_paginator("list_thing_principals").paginate(thingName=thing_name):
                for arn in page.get("principals", []):
                    # arn:aws:iot:<region>:<account>:cert/<certificateId>; other principal kinds
                    # (Cognito identities) cannot be a requesting certificate and are skipped.
                    resource = str(arn).split(":", 5)[-1]
                    if resource.startswith("cert/"):
                        principals.add(resource[len("cert/"):])
        except (BotoCoreError, ClientError) as exc:
            raise LookupFailed(f"ListThingPrincipals {thing_name}: {exc}") from None
        attributes = {str(k): str(v) for k, v in (thing.get("attributes") or {}).items()}
        return ThingView(frozenset(principals), attributes)


def config_from_env(env: dict[str, str] | None = None) -> HookConfig:
    env = dict(os.environ if env is None else env)
    ids = frozenset(i.strip() for i in env.get("CLAIM_CERTIFICATE_IDS", "").split(",") if i.strip())
    return HookConfig(claim_certificate_ids=ids,
                      thing_name_format=env.get("THING_NAME_FORMAT", "methane-{serial}") or "methane-{serial}")


_ports: tuple[HookConfig, IotThingDirectory, DynamoDbAllowlist] | None = None


def _build() -> tuple[HookConfig, IotThingDirectory, DynamoDbAllowlist]:
    """Clients made once per Lambda container (cold start), reused by every invocation."""
    global _ports
    if _ports is None:
        import boto3
        from botocore.config import Config

        cfg = Config(**CLIENT_TIMEOUTS)
        table = os.environ.get("ALLOWLIST_TABLE", "")
        if not table:
            raise RuntimeError("ALLOWLIST_TABLE is not set")
        _ports = (config_from_env(), IotThingDirectory(boto3.client("iot", config=cfg)),
                  DynamoDbAllowlist(boto3.client("dynamodb", config=cfg), table))
    return _ports


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """Lambda entry point: IoT Core's pre-provisioning hook event in, its answer out."""
    config, things, allowlist = _build()
    return respond(event, config, things, allowlist)
