"""The Lambda package holds what the handlers import, runs on the standard library alone, and is
reproducible (its hash names the upload)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from cloud import package


def test_package_imports_handlers_without_site_packages(tmp_path):
    out = tmp_path / "lambda.zip"
    digest = package.build(out)
    assert package.build(out) == digest  # reproducible
    names = zipfile.ZipFile(out).namelist()
    assert "agent/payload/compact.py" in names and "cloud/lambdas/ingest_handler.py" in names
    assert "cloud/localstore.py" not in names and not any(n.startswith(("emulator/", "drivers/")) for n in names)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import cloud.lambdas.ingest_handler, cloud.lambdas.alarm_handler, cloud.lambdas.silence_handler; "
            "from agent.payload import decode; print('ok')")
    # -S: no site-packages, -I: not the repo either; only the zip and the standard library.
    res = subprocess.run([sys.executable, "-S", "-I", "-c", code, str(out)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
