"""The result of one check and the two ways of printing a run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["PASS", "WARN", "FAIL"]


@dataclass(frozen=True)
class Result:
    status: Status
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        # One line, always: a detail from an exception may carry newlines.
        detail = " ".join(self.detail.split())
        text = f"{self.status} {self.name}: {detail}"
        if self.fix and self.status != "PASS":
            text += f" (fix: {' '.join(self.fix.split())})"
        return text


def render_text(results: Sequence[Result]) -> str:
    return "\n".join(r.line() for r in results)


def render_json(results: Sequence[Result]) -> str:
    failed = sum(r.status == "FAIL" for r in results)
    warned = sum(r.status == "WARN" for r in results)
    doc = {"ok": failed == 0, "failed": failed, "warnings": warned, "checks": [asdict(r) for r in results]}
    return json.dumps(doc, indent=2)
