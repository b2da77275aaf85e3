"""One source of truth for what the template embeds from ``config/``: the IoT policies and the
fleet provisioning template live in ``config/*.json`` (the emulator loads them from there too), and
``cloud/template.yaml`` carries exact copies between markers that this tool writes::

      # BEGIN config/iot-policy-device.json as object
      PolicyDocument: {...}
      # END config/iot-policy-device.json

``as object`` embeds the JSON as a YAML flow mapping; ``as string`` as a block string (the
provisioning template's ``TemplateBody`` is a JSON string). ``python -m cloud.template_sync`` rewrites
the blocks; ``--check`` (run by ``make lint`` and the tests) fails when one differs from config/."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "cloud" / "template.yaml"
_BEGIN = re.compile(r"^(?P<indent> *)# BEGIN (?P<src>config/[\w.-]+\.json) as (?P<mode>object|string)$")


class SyncError(ValueError):
    pass


def _render(indent: str, key: str, doc: object, mode: str) -> list[str]:
    if mode == "object":
        lines = json.dumps(doc, indent=2).splitlines()
        return [f"{indent}{key}:"] + [f"{indent}  {line}" for line in lines]
    return [f"{indent}{key}: |"] + [f"{indent}  {line}" for line in json.dumps(doc, indent=1).splitlines()]


def sync(text: str, root: Path = ROOT) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _BEGIN.match(lines[i])
        out.append(lines[i])
        i += 1
        if not m:
            continue
        end = f"{m['indent']}# END {m['src']}"
        try:
            j = lines.index(end, i)
        except ValueError:
            raise SyncError(f"cloud/template.yaml: no '{end.strip()}' after '{lines[i - 1].strip()}'") from None
        key_line = lines[i] if i < j else ""
        key = key_line.strip().split(":", 1)[0]
        if not key:
            raise SyncError(f"cloud/template.yaml: the block for {m['src']} must start with '<Key>:'")
        doc = json.loads((root / m["src"]).read_text())
        out.extend(_render(m["indent"], key, doc, m["mode"]))
        out.append(end)
        i = j + 1
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if cloud/template.yaml differs from config/")
    args = parser.parse_args(argv)
    text = TEMPLATE.read_text()
    try:
        want = sync(text)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if want != text:
            print("error: cloud/template.yaml does not embed config/*.json exactly; run "
                  "python -m cloud.template_sync", file=sys.stderr)
            return 1
        return 0
    TEMPLATE.write_text(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
