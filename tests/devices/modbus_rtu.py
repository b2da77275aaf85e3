"""Modbus RTU slave emulator on a pty, built from pymodbus's own RTU framer and PDU classes (so the
CRC and framing on the wire are the library's, not ours). pymodbus's serial server needs a device
path it can open itself, which the master side of a pty is not; this keeps the same bytes.

Besides registers (a transmitter) it has coils (an RS-485 relay module: function 5 writes one,
function 1 reads them); ``coil_log`` records every write as (coil, value, monotonic time)."""

from __future__ import annotations

import time

from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, WriteSingleCoilResponse
from pymodbus.pdu.register_message import ReadHoldingRegistersResponse, ReadInputRegistersResponse

from tests.devices.pty_host import EmulatedDevice


class ModbusRtuDevice(EmulatedDevice):
    def __init__(self, slave: int = 1, holding: dict[int, int] | None = None,
                 inputs: dict[int, int] | None = None, coils: int = 0) -> None:
        super().__init__()
        self.slave = slave
        self.tables = {3: dict(holding or {}), 4: dict(inputs or {})}
        self.coils = [False] * coils
        self.coil_log: list[tuple[int, bool, float]] = []
        self._framer = FramerRTU(DecodePDU(is_server=True))
        self._pending: list = []

    def set_registers(self, function: int, start: int, values: list[int]) -> None:
        with self.lock:
            for i, v in enumerate(values):
                self.tables[function][start + i] = v & 0xFFFF

    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        used, pdu = self._framer.handleFrame(buf, 0, 0)
        if pdu is None:
            return None, used
        self._pending.append(pdu)
        return buf[:used], used

    def reply(self, request: bytes) -> bytes:
        pdu = self._pending.pop(0)
        if pdu.dev_id != self.slave:
            return b""  # another slave on the bus: stay silent
        fc = pdu.function_code
        resp: ModbusPDU
        if fc in (1, 5):
            resp = self._coil_reply(pdu)
        elif fc not in self.tables:
            resp = ExceptionResponse(fc, 1)
        else:
            table = self.tables[fc]
            addrs = range(pdu.address, pdu.address + pdu.count)
            if not all(a in table for a in addrs):
                resp = ExceptionResponse(fc, 2)
            else:
                cls = ReadHoldingRegistersResponse if fc == 3 else ReadInputRegistersResponse
                resp = cls(registers=[table[a] for a in addrs])
        resp.dev_id = self.slave
        return self._framer.buildFrame(resp)

    def _coil_reply(self, pdu: ModbusPDU) -> ModbusPDU:
        fc = pdu.function_code
        if fc == 5:
            if not 0 <= pdu.address < len(self.coils):
                return ExceptionResponse(fc, 2)
            # handle() already holds self.lock
            self.coils[pdu.address] = bool(pdu.bits[0])
            self.coil_log.append((pdu.address, bool(pdu.bits[0]), time.monotonic()))
            return WriteSingleCoilResponse(address=pdu.address, bits=[bool(pdu.bits[0])])
        if not (pdu.address >= 0 and pdu.address + pdu.count <= len(self.coils)):
            return ExceptionResponse(fc, 2)
        return ReadCoilsResponse(bits=self.coils[pdu.address: pdu.address + pdu.count])

    def nak(self, request: bytes) -> bytes:
        resp = ExceptionResponse(request[1], 4)
        resp.dev_id = self.slave
        return self._framer.buildFrame(resp)
