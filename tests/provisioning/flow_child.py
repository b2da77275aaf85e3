"""Run the provisioning flow in a child process that SIGKILLs itself at a named checkpoint, as a
power cut or OOM kill would: ``python -m tests.provisioning.flow_child EMU_DIR STATE_DIR HW_ROOT
METHOD KILL_AT``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from emulator.state import EmulatorInfo
from provisioning.flow import Provisioner, Settings
from provisioning.session import Endpoint


def main() -> int:
    emu_dir, state_dir, hw_root, method, kill_at = sys.argv[1:6]
    info = EmulatorInfo.load(emu_dir)
    assert info.claim_cert_file and info.claim_key_file and info.template_name
    settings = Settings(
        state_dir=Path(state_dir), endpoint=Endpoint(info.endpoint, info.port, info.ca_file),
        claim_cert_file=info.claim_cert_file, claim_key_file=info.claim_key_file,
        template_name=info.template_name, parameters={"SiteId": "site-7"}, hardware_root=Path(hw_root),
        method=method,  # type: ignore[arg-type]
        max_connect_attempts=3, request_timeout_s=10,
    )

    def checkpoint(name: str) -> None:
        if name == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    Provisioner(settings, checkpoint=checkpoint).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
