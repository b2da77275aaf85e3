"""A local AWS IoT Core for development and tests (see emulator/README.md)."""

from emulator.lifecycle import Component, Emulator
from emulator.state import DeviceIdentity, EmulatorInfo

__all__ = ["Component", "DeviceIdentity", "Emulator", "EmulatorInfo"]
