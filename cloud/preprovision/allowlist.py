"""Allowlist backends for the pre-provisioning hook: which manufactured serials may onboard.

- :class:`OpenAllowlist` - every serial (the emulator's default, for development only);
- :class:`FileAllowlist` - a local JSON or CSV file, re-read when it changes (the emulator's
  ``--serial-allowlist FILE``);
- :class:`DynamoDbAllowlist` - a DynamoDB table keyed by ``serial`` (the Lambda in AWS).

File formats (the extension decides; an entry's ``site`` is optional and pins the site the thing
joins):

- ``.json``: an array of serials or objects, ``["A1", {"serial": "B2", "site": "north-7"}]``;
- ``.csv``: a header row with a ``serial`` column and optionally a ``site`` column.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from cloud.preprovision.ports import AllowEntry, LookupFailed

SERIAL_RE = re.compile(r"^[A-Za-z0-9:_-]{1,64}$")
SITE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class AllowlistError(ValueError):
    """An allowlist file that cannot be used; the message names the file and the entry."""


class OpenAllowlist:
    """Every serial may onboard (development and the emulator's default)."""

    def lookup(self, serial: str) -> AllowEntry | None:
        return AllowEntry(serial)


def _entry(serial: Any, site: Any, where: str) -> AllowEntry:
    if not isinstance(serial, str) or not SERIAL_RE.fullmatch(serial):
        raise AllowlistError(f"{where}: serial {serial!r} is not 1-64 of [A-Za-z0-9:_-]")
    if site in (None, ""):
        return AllowEntry(serial)
    if not isinstance(site, str) or not SITE_RE.fullmatch(site):
        raise AllowlistError(f"{where}: site {site!r} is not 1-64 of [A-Za-z0-9_-]")
    return AllowEntry(serial, site)


def _parse_json(text: str, name: str) -> list[AllowEntry]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AllowlistError(f"{name}: not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise AllowlistError(f"{name}: must be a JSON array of serials or {{serial, site}} objects")
    out = []
    for i, item in enumerate(doc):
        where = f"{name}[{i}]"
        if isinstance(item, dict):
            unknown = set(item) - {"serial", "site"}
            if unknown:
                raise AllowlistError(f"{where}: unknown keys {sorted(unknown)} (allowed: serial, site)")
            out.append(_entry(item.get("serial"), item.get("site"), where))
        else:
            out.append(_entry(item, None, where))
    return out


def _parse_csv(text: str, name: str) -> list[AllowEntry]:
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip() for f in (reader.fieldnames or [])]
    if "serial" not in fields:
        raise AllowlistError(f"{name}: the header row must name a 'serial' column (and optionally 'site')")
    out = []
    for row in reader:
        clean = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in row.items()}
        if not any(clean.values()):
            continue  # blank line
        out.append(_entry(clean.get("serial"), clean.get("site"), f"{name} line {reader.line_num}"))
    return out


def parse(data: bytes, name: str) -> dict[str, AllowEntry]:
    """Entries by serial; a serial listed twice with different sites is an error."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AllowlistError(f"{name}: not UTF-8 text") from None
    suffix = Path(name).suffix.lower()
    if suffix == ".json":
        entries = _parse_json(text, name)
    elif suffix == ".csv":
        entries = _parse_csv(text, name)
    else:
        raise AllowlistError(f"{name}: use a .json or .csv file")
    out: dict[str, AllowEntry] = {}
    for e in entries:
        if e.serial in out and out[e.serial] != e:
            raise AllowlistError(f"{name}: serial {e.serial!r} is listed twice with different sites")
        out[e.serial] = e
    return out


class FileAllowlist:
    """A JSON or CSV file, checked at construction (a bad file is an error at start, not a silent
    deny later) and re-read when its mtime or size changes, so serials can be added while the
    emulator runs. A file that turns unreadable or invalid later makes lookups raise LookupFailed
    (the hook then denies every new thing) until it is fixed."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._entries: dict[str, AllowEntry] = {}
        self._load()

    def _load(self) -> None:
        try:
            st = os.stat(self.path)
            data = self.path.read_bytes()
        except OSError as exc:
            raise AllowlistError(f"{self.path}: {exc.strerror}") from None
        self._entries = parse(data, str(self.path))
        self._stamp = (st.st_mtime_ns, st.st_size)

    def lookup(self, serial: str) -> AllowEntry | None:
        with self._lock:
            try:
                st = os.stat(self.path)
                if (st.st_mtime_ns, st.st_size) != self._stamp:
                    self._load()
            except (OSError, AllowlistError) as exc:
                raise LookupFailed(str(exc)) from None
            return self._entries.get(serial)


class DynamoDbAllowlist:
    """A DynamoDB table with partition key ``serial`` (String) and an optional ``site`` (String)
    attribute; an item present means the serial may onboard. ``client`` is a boto3 DynamoDB
    client (the Lambda makes one with short timeouts: IoT Core gives the hook 5 s)."""

    def __init__(self, client: Any, table: str) -> None:
        self.client = client
        self.table = table

    def lookup(self, serial: str) -> AllowEntry | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.client.get_item(TableName=self.table, Key={"serial": {"S": serial}},
                                        ConsistentRead=True)
        except (BotoCoreError, ClientError) as exc:
            raise LookupFailed(f"DynamoDB table {self.table}: {exc}") from None
        item = resp.get("Item")
        if item is None:
            return None
        site = item.get("site", {}).get("S")
        if site is not None and not SITE_RE.fullmatch(site):
            raise LookupFailed(f"DynamoDB table {self.table}: site {site!r} of serial {serial!r} is invalid")
        return AllowEntry(serial, site)
