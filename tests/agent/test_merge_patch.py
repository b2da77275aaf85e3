"""The project's one JSON merge patch against RFC 7386's own examples (Appendix A)."""

from __future__ import annotations

import pytest

from agent.merge_patch import merge_patch

# (target, patch, result) from RFC 7386 Appendix A, the rows whose patch is an object.
RFC_7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize("target, patch, result", RFC_7386)
def test_rfc_7386_examples(target, patch, result):
    before = repr(target)
    assert merge_patch(target, patch) == result
    assert repr(target) == before  # the target is never changed in place


def test_the_agent_and_the_emulator_share_it():
    from agent.remote.shadow import sync as shadow
    from emulator.services import shadow_state

    assert shadow_state.merge is merge_patch and shadow.merge_patch is merge_patch
