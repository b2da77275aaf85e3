"""The documented config keys and the config model stay in step (issue 11: docs that drifted).

Documented = shown in ``config/agent.example.toml`` (commented out when it has no default or is an
example) or named in a capability README's config-key table or list. Every key of the pydantic
model (``agent/config.py`` and the sections it includes) must be documented; the example must show
no key the model lacks; a README's "Config keys" list must name only keys of its section."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import AgentConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "agent.example.toml"
READMES = sorted(p for p in ROOT.glob("*/**/README.md") if ".venv" not in p.parts)
_SECTION = re.compile(r"^\s*#?\s*\[\[?([a-z_.]+)\]\]?\s*(?:#.*)?$")
_KEY = re.compile(r"^\s*#?\s*([a-z_][a-z0-9_]*)\s*=\s*\S")
_TABLE_ROW = re.compile(r"^\|\s*`[a-z_]")


def _submodels(annotation: typing.Any) -> list[type[BaseModel]]:
    """Every BaseModel inside ``X``, ``list[X]``, ``X | Y | None``, ``Annotated[...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is dict:
        return []
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _submodels(arg)
    return out


def model_keys(model: type[BaseModel] = AgentConfig, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf key (a union of section models contributes all its members')."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        subs = _submodels(field.annotation)
        if subs:
            for sub in subs:
                out |= model_keys(sub, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def example_keys(text: str) -> set[str]:
    section = ""
    out: set[str] = set()
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            section = m.group(1) + "."
            continue
        m = _KEY.match(line)
        if m:
            out.add(section + m.group(1))
    return out


def readme_names() -> set[str]:
    """Key names in README table rows that document keys (first cell starts with a key)."""
    names: set[str] = set()
    for path in READMES:
        for line in path.read_text().splitlines():
            if _TABLE_ROW.match(line):
                names |= set(re.findall(r"`([a-z_][a-z0-9_]*)", line))
    return names


def test_the_example_shows_no_key_the_model_lacks():
    model = model_keys()
    sections = {k.rsplit(".", i)[0] for k in model for i in range(1, k.count(".") + 1)}
    stale = example_keys(EXAMPLE.read_text()) - model - sections  # `outputs = []` before its [[table]]s
    assert sorted(stale) == [], "keys in config/agent.example.toml the model does not have"


def test_every_model_key_is_documented():
    shown = {k for k in model_keys() if k in example_keys(EXAMPLE.read_text())}
    named = readme_names()
    undocumented = {k for k in model_keys() - shown if k.rsplit(".", 1)[-1] not in named}
    assert sorted(undocumented) == [], "config keys neither in config/agent.example.toml nor in a README table"


def test_the_checks_can_fail():
    text = EXAMPLE.read_text().replace("keep_alive_s = 60", "keep_alive_secs = 60")
    assert "connection.keep_alive_secs" in example_keys(text) - model_keys()
    assert "connection.keep_alive_s" not in example_keys(text)


_HEADING = re.compile(r"^## Config keys \(`\[([a-z_]+)\]`")
LISTS = [p.relative_to(ROOT).as_posix() for p in READMES if any(_HEADING.match(x) for x in p.read_text().splitlines())]


def test_readmes_with_config_key_lists_are_found():
    assert LISTS, "no README has a 'Config keys ([section])' list any more: update this test"


@pytest.mark.parametrize("readme", LISTS)
def test_readme_config_key_lists_name_only_keys_of_their_section(readme):
    lines = (ROOT / readme).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if _HEADING.match(line))
    match = _HEADING.match(lines[start])
    assert match is not None
    section = match.group(1)
    body = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        body.append(line)
    named = set(re.findall(r"`([a-z][a-z0-9_]*)`", "\n".join(body)))
    leaves = {k.rsplit(".", 1)[-1] for k in model_keys() if k.startswith(section + ".")}
    assert sorted(named - leaves) == [], f"{readme} names keys [{section}] does not have"
