"""Fuzzed job documents and shadow deltas never crash and never change state unless valid."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent import config as cfg
from agent.merge_patch import merge_patch
from agent.remote.jobs.actions import Rejected, parse, registry
from agent.remote.managed import MANAGED, to_config
from agent.runtime import Agent

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**9, 10**9),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_value = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c,
                                                                                         max_size=4), max_leaves=12)
keys = st.sampled_from([*MANAGED, "connection", "state_dir", "remote", "x"])
fields = st.sampled_from(["interval_s", "enabled", "alarms", "encoding", "max_bytes", "level", "path", "topic",
                          "sync_source", "commit_interval_s", "batch_max_bytes", "settings"])
config_doc = st.dictionaries(keys, st.one_of(
    st.dictionaries(fields, json_value, max_size=3),
    st.dictionaries(st.sampled_from(["sim-1", "other"]), st.dictionaries(fields, json_value, max_size=3), max_size=2),
    json_value), max_size=3)


@settings(max_examples=150, deadline=None)
@given(doc=st.one_of(json_value, st.fixed_dictionaries({"action": st.sampled_from(sorted(registry()))},
                                                       optional={"params": json_value, "x": json_value})))
def test_fuzzed_job_documents_are_accepted_or_rejected_with_a_bounded_reason(doc: Any) -> None:
    remote = cfg.RemoteConfig()
    try:
        action, params = parse(doc, registry(), remote)
    except Rejected as exc:
        assert str(exc)
    else:
        assert action.name in registry()
        assert params.model_dump() is not None


def test_every_allowlisted_name_loads_the_action_of_that_name() -> None:
    # The registry imports an action's module on first lookup: a typo in the allowlist would only
    # show when a job names the action, so every entry is resolved here.
    actions = registry()
    assert len(actions) == len(set(actions)) == 7
    for name in actions:
        assert actions[name].name == name
    assert actions.get("rm -rf") is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(config_doc, min_size=1, max_size=4))
def test_fuzzed_deltas_apply_atomically_or_change_nothing(docs: list[dict[str, Any]]) -> None:
    state = Path(tempfile.mkdtemp(prefix="rf-"))

    async def scenario() -> None:
        conf = cfg.validate({"state_dir": str(state),
                             "sensors": [{"id": "sim-1", "driver": "simulated", "interval_s": 0.5}]})
        agent = Agent(conf)
        try:
            for doc in docs:
                before = agent.conf
                errors = await agent.layer.set_shadow(doc, None)
                if errors:
                    assert agent.conf == before
                    assert all(isinstance(p, str) and isinstance(r, str) for p, r in errors)
                else:
                    # applied is exactly the document over the file config, and local-only parts held
                    # (nulls delete, as in a merge patch; a real shadow never sends them)
                    assert agent.conf == to_config(conf, merge_patch({}, doc))
                    assert agent.layer.layers["shadow"] == doc
                assert agent.conf.connection == conf.connection and agent.conf.state_dir == conf.state_dir
                assert agent.conf.spool.path == conf.spool.path and agent.conf.uplink.topic == conf.uplink.topic
        finally:
            await agent.sampler.stop()

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(state, ignore_errors=True)
