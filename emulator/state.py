"""``emulator.json``: how a client finds a running emulator (endpoint, port, CA, ready-made admin
and device identities). Written atomically so a reader never sees half a file, read back by tests,
the agent's demo and the admin CLI commands."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from emulator.pki import write_public

STATE_FILE = "emulator.json"


class StateError(ValueError):
    """emulator.json is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    thing_name: str
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class EmulatorInfo:
    state_dir: Path
    endpoint: str
    port: int
    ca_file: Path
    admin_cert_file: Path
    admin_key_file: Path
    device: DeviceIdentity
    # Fleet provisioning (present when the emulator runs with the authz plugin).
    claim_cert_file: Path | None = None
    claim_key_file: Path | None = None
    template_name: str | None = None

    @property
    def authz_plugin(self) -> bool:
        """Whether the broker runs the authz plugin, which names the requester of every device
        request on ``$aws/...`` and can deliver a message to one connection (``$emulator/deliver``).
        The plugin comes with fleet provisioning, whose claim identity is set exactly then."""
        return self.claim_cert_file is not None

    def to_json(self) -> str:
        def conv(v: Any) -> Any:
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v

        return json.dumps(conv(asdict(self)), indent=2, sort_keys=True) + "\n"

    def save(self) -> Path:
        path = self.state_dir / STATE_FILE
        write_public(path, self.to_json().encode())
        return path

    @classmethod
    def load(cls, state_dir: Path | str) -> EmulatorInfo:
        path = Path(state_dir) / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise StateError(f"{path}: not found (is `methane-agent emulator serve` running there?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StateError(f"{path}: not valid JSON: {exc}") from None
        try:
            dev = raw["device"]
            return cls(
                state_dir=Path(raw.get("state_dir", state_dir)),
                endpoint=str(raw["endpoint"]),
                port=int(raw["port"]),
                ca_file=Path(raw["ca_file"]),
                admin_cert_file=Path(raw["admin_cert_file"]),
                admin_key_file=Path(raw["admin_key_file"]),
                device=DeviceIdentity(
                    thing_name=str(dev["thing_name"]),
                    cert_file=Path(dev["cert_file"]),
                    key_file=Path(dev["key_file"]),
                ),
                claim_cert_file=Path(raw["claim_cert_file"]) if raw.get("claim_cert_file") else None,
                claim_key_file=Path(raw["claim_key_file"]) if raw.get("claim_key_file") else None,
                template_name=str(raw["template_name"]) if raw.get("template_name") else None,
            )
        except KeyError as exc:
            raise StateError(f"{path}: missing key {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise StateError(f"{path}: malformed: {exc}") from None
