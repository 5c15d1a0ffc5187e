"""The syncer Graph emulator: a faithful local stand-in for Microsoft Graph and the identity platform.

Start one in-process::

    from syncer.emulator import EmulatorServer, EmulatorConfig
    with EmulatorServer(EmulatorConfig(seed=1)) as emu:
        emu.info["graph_url"], emu.info["authority"], emu.info["ca_cert"]

It shares no Graph protocol code with syncer's client (syncer.graph): two independent readings of the
documentation. See admin.py for the admin API and faults.py for the fault switches.
"""

from __future__ import annotations

from syncer.emulator.app import create_app
from syncer.emulator.config import EmulatorConfig
from syncer.emulator.server import EmulatorServer
from syncer.emulator.state import EmulatorState
from syncer.emulator.store import ChangeEvent

__all__ = ["ChangeEvent", "EmulatorConfig", "EmulatorServer", "EmulatorState", "create_app"]
