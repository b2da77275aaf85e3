"""The documented config keys and the config model stay in step: every key of the pydantic model
(``agent/config.py``) is shown in ``config/agent.example.toml`` (commented out when it has no
default), the example shows no key the model does not have, and a README's "Config keys" list names
exactly its section's keys (issue 11: docs that drifted)."""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import AgentConfig

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "agent.example.toml"
_SECTION = re.compile(r"^\s*\[\[?([a-z_.]+)\]\]?")
_KEY = re.compile(r"^\s*#?\s*([a-z_][a-z0-9_]*)\s*=\s*\S")


def _submodel(annotation: typing.Any) -> type[BaseModel] | None:
    """The BaseModel inside ``X``, ``list[X]``, ``X | None``, ``Annotated[...]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is dict:
        return None
    if origin in (list, typing.Union, types.UnionType, typing.Annotated) or origin is not None:
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def model_keys(model: type[BaseModel] = AgentConfig, prefix: str = "") -> set[str]:
    """Dotted paths of every leaf key; a section (sub-model) is a prefix, not a key itself."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        key = field.alias or name
        sub = _submodel(field.annotation)
        if sub is not None:
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


def test_every_model_key_is_documented_in_the_example_and_nothing_else():
    documented = example_keys(EXAMPLE.read_text())
    model = model_keys()
    assert sorted(model - documented) == [], "keys of the model missing from config/agent.example.toml"
    assert sorted(documented - model) == [], "keys in config/agent.example.toml the model does not have"


def test_the_check_can_fail():
    text = EXAMPLE.read_text().replace("keep_alive_s = 60", "keep_alive_secs = 60")
    documented = example_keys(text)
    assert "connection.keep_alive_secs" in documented and "connection.keep_alive_s" not in documented


_HEADING = re.compile(r"^## Config keys \(`\[([a-z_]+)\]`")


READMES = sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("*/**/README.md")
                 if ".venv" not in p.parts and any(_HEADING.match(line) for line in p.read_text().splitlines()))


def test_readmes_with_config_key_lists_are_found():
    assert "agent/remote/README.md" in READMES


@pytest.mark.parametrize("readme", READMES)
def test_readme_config_key_lists_match_their_section(readme):
    lines = (ROOT / readme).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if _HEADING.match(line))
    section = _HEADING.match(lines[start]).group(1)
    body = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        body.append(line)
    named = {t for t in re.findall(r"`([a-z][a-z0-9_]*)`", "\n".join(body))}
    keys = {k[len(section) + 1:] for k in model_keys() if k.startswith(section + ".")}
    leaves = {k.rsplit(".", 1)[-1] for k in keys}
    assert sorted(named - leaves) == [], f"{readme} names keys [{section}] does not have"
    assert sorted(leaves - named) == [], f"{readme} leaves out keys of [{section}]"
