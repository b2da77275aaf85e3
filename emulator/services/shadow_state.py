"""Shadow document algebra, free of topics and storage: merging an update into a section,
mirroring metadata timestamps, and computing the delta exactly as IoT Core's documents describe
(reference §3.2 to 3.4). Kept apart so the rules can be unit- and property-tested on their own."""

from __future__ import annotations

from typing import Any

from agent.merge_patch import merge_patch

JsonObj = dict[str, Any]


# A shadow update merges into its section as an RFC 7386 merge patch: objects merge key by key,
# ``null`` removes a key, arrays and scalars replace whatever was there.
merge = merge_patch


def stamp(value: Any, ts: int) -> Any:
    """Metadata mirroring ``value``: every leaf becomes ``{"timestamp": ts}``, arrays become
    arrays of per-element metadata."""
    if isinstance(value, dict):
        return {k: stamp(v, ts) for k, v in value.items()}
    if isinstance(value, list):
        return [stamp(v, ts) for v in value]
    return {"timestamp": ts}


def merge_metadata(meta: JsonObj, state: JsonObj, patch: JsonObj, ts: int) -> JsonObj:
    """Metadata after applying ``patch`` to ``state`` whose metadata is ``meta``.

    Needs the old state because a leaf's metadata (``{"timestamp": …}``) is itself an object: a
    leaf replaced by an object must start from fresh metadata, not merge into the timestamp.
    """
    out = dict(meta)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict):
            old = state.get(key)
            old_meta = out.get(key) if isinstance(old, dict) else None
            out[key] = merge_metadata(
                old_meta if isinstance(old_meta, dict) else {},
                old if isinstance(old, dict) else {},
                value,
                ts,
            )
        else:
            out[key] = stamp(value, ts)
    return out


def delta(desired: JsonObj, reported: JsonObj) -> JsonObj:
    """Fields of ``desired`` that ``reported`` lacks or holds differently; objects recurse and keep
    their path, arrays and scalars are compared whole; reported-only fields never appear."""
    out: JsonObj = {}
    for key, want in desired.items():
        if key not in reported:
            out[key] = want
            continue
        have = reported[key]
        if isinstance(want, dict) and isinstance(have, dict):
            sub = delta(want, have)
            if sub:
                out[key] = sub
        elif not _same(want, have):
            out[key] = want
    return out


def _same(a: Any, b: Any) -> bool:
    # JSON equality: 1 == 1.0 but True is not 1, which Python's == would say it is.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def delta_metadata(delta_doc: JsonObj, desired_meta: JsonObj) -> JsonObj:
    """The desired-side metadata of exactly the fields present in ``delta_doc``."""
    out: JsonObj = {}
    for key, value in delta_doc.items():
        meta = desired_meta.get(key)
        if isinstance(value, dict) and isinstance(meta, dict):
            out[key] = delta_metadata(value, meta)
        elif meta is not None:
            out[key] = meta
    return out


def depth(value: Any) -> int:
    """JSON nesting levels of ``value``: an object or array is one level plus its deepest child;
    scalars add none. IoT Core counts the ``desired``/``reported`` node itself as level 1.
    Iterative, so a hostile document cannot exhaust the interpreter's stack."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level + 1)
        stack.extend((child, level + 1) for child in children)
    return deepest


def has_null_in_array(value: Any, in_array: bool = False) -> bool:
    """True when an array anywhere below ``value`` holds ``null``, which IoT Core refuses."""
    if value is None:
        return in_array
    if isinstance(value, dict):
        return any(has_null_in_array(v, False) for v in value.values())
    if isinstance(value, list):
        return any(has_null_in_array(v, True) for v in value)
    return False
