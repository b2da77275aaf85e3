"""Builds the Lambda package: ``build/cloud-lambda.zip`` with ``cloud/`` and the agent's decoder
(``agent/payload``, ``agent/reading.py``), nothing else: the handlers need only the standard library
and boto3, which the Lambda runtime provides. The zip is reproducible (fixed timestamps, sorted), so
its hash names the upload and an unchanged package is not redeployed."""

from __future__ import annotations

import hashlib
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "cloud-lambda.zip"
# Local-twin and developer modules the Lambdas never import.
EXCLUDE = {"cloud/localstore.py", "cloud/cli.py", "cloud/template_sync.py", "cloud/package.py"}


def files() -> list[Path]:
    out = [ROOT / "agent" / "__init__.py", ROOT / "agent" / "reading.py"]
    out += sorted((ROOT / "agent" / "payload").glob("*.py"))
    out += sorted(p for p in (ROOT / "cloud").rglob("*.py") if p.relative_to(ROOT).as_posix() not in EXCLUDE)
    return out


def build(out: Path = OUT) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files():
            info = zipfile.ZipInfo(path.relative_to(ROOT).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, path.read_bytes())
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main() -> int:
    digest = build()
    print(f"{OUT} {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
