"""TI ADS1115 emulator: pointer register, config register semantics (reset 0x8583), single-shot
conversion started by writing OS=1 with MODE=1, OS reads 0 while converting, 16-bit two's complement
result clamped at full scale, all MSB first."""

from __future__ import annotations

FSR = {0: 6.144, 1: 4.096, 2: 2.048, 3: 1.024, 4: 0.512, 5: 0.256, 6: 0.256, 7: 0.256}
DIFF = {0: (0, 1), 1: (0, 3), 2: (1, 3), 3: (2, 3)}


class Ads1115Chip:
    def __init__(self, volts: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0), busy_reads: int = 2) -> None:
        self.volts = list(volts)
        self.busy_reads = busy_reads
        self.regs = {0: 0x0000, 1: 0x8583, 2: 0x8000, 3: 0x7FFF}
        self.pointer = 0
        self._busy = 0
        self.conversions = 0
        self.stuck = False  # a chip that never finishes (OS stays 0)

    def _convert(self, config: int) -> int:
        mux = (config >> 12) & 0x7
        fsr = FSR[(config >> 9) & 0x7]
        if mux & 0b100:
            v = self.volts[mux & 0b11]
        else:
            p, n = DIFF[mux]
            v = self.volts[p] - self.volts[n]
        code = round(v / (fsr / 32768.0))
        return max(-32768, min(32767, code)) & 0xFFFF

    def write(self, data: bytes) -> None:
        self.pointer = data[0] & 0x03
        if len(data) < 3:
            return
        value = (data[1] << 8) | data[2]
        if self.pointer == 1:
            single_shot = bool(value & 0x0100)
            if value & 0x8000 and single_shot:
                self.regs[0] = self._convert(value)
                self.conversions += 1
                self._busy = self.busy_reads
            self.regs[1] = value & 0x7FFF  # OS reads back as "busy" until the conversion is done
        elif self.pointer in (2, 3):
            self.regs[self.pointer] = value

    def read(self, n: int) -> bytes:
        value = self.regs[self.pointer]
        if self.pointer == 1:
            if self._busy > 0 or self.stuck:
                self._busy -= 1
            else:
                value |= 0x8000
        return value.to_bytes(2, "big")[:n].ljust(n, b"\xff")
