"""Bosch BME280 emulator: chip id, calibration registers, forced mode with a measuring bit, and raw
ADC values computed backwards from the chosen T/P/H with Bosch's floating-point compensation
(the driver uses the integer version, so the two must agree to within their resolution)."""

from __future__ import annotations

import struct

# T/P trimming as printed in Bosch's BMP280 example (reference §4.1); H values typical of real parts.
T_CAL = (27504, 26435, -1000)
P_CAL = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
H_CAL = (75, 362, 0, 324, 50, 30)


def _t_fine(adc_t: int) -> float:
    t1, t2, t3 = T_CAL
    v1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    v2 = ((adc_t / 131072.0 - t1 / 8192.0) ** 2) * t3
    return v1 + v2


def _pressure(t_fine: float, adc_p: int) -> float:
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = P_CAL
    v1 = t_fine / 2.0 - 64000.0
    v2 = v1 * v1 * p6 / 32768.0
    v2 = v2 + v1 * p5 * 2.0
    v2 = v2 / 4.0 + p4 * 65536.0
    v1 = (p3 * v1 * v1 / 524288.0 + p2 * v1) / 524288.0
    v1 = (1.0 + v1 / 32768.0) * p1
    p = 1048576.0 - adc_p
    p = (p - v2 / 4096.0) * 6250.0 / v1
    v1 = p9 * p * p / 2147483648.0
    v2 = p * p8 / 32768.0
    return p + (v1 + v2 + p7) / 16.0


def _humidity(t_fine: float, adc_h: int) -> float:
    h1, h2, h3, h4, h5, h6 = H_CAL
    h = t_fine - 76800.0
    h = (adc_h - (h4 * 64.0 + h5 / 16384.0 * h)) * (
        h2 / 65536.0 * (1.0 + h6 / 67108864.0 * h * (1.0 + h3 / 67108864.0 * h))
    )
    h = h * (1.0 - h1 * h / 524288.0)
    return min(100.0, max(0.0, h))


def _search(f, target: float, lo: int, hi: int, increasing: bool) -> int:
    while lo < hi:
        mid = (lo + hi) // 2
        v = f(mid)
        if (v < target) == increasing:
            lo = mid + 1
        else:
            hi = mid
    return lo


def raw_for(temp_c: float, pa: float, rh: float) -> tuple[int, int, int]:
    adc_t = _search(lambda a: _t_fine(a) / 5120.0, temp_c, 0, (1 << 20) - 1, True)
    tf = _t_fine(adc_t)
    adc_p = _search(lambda a: _pressure(tf, a), pa, 0, (1 << 20) - 1, False)
    adc_h = _search(lambda a: _humidity(tf, a), rh, 0, 0xFFFF, True)
    return adc_p, adc_t, adc_h


class Bme280Chip:
    def __init__(self, temp_c: float = 21.5, pa: float = 101_325.0, rh: float = 45.0, busy_reads: int = 2,
                 chip_id: int = 0x60) -> None:
        self.temp_c, self.pa, self.rh = temp_c, pa, rh
        self.busy_reads = busy_reads
        self.regs = bytearray(256)
        self.regs[0xD0] = chip_id
        tp = struct.pack("<HhhHhhhhhhhh", *T_CAL, *P_CAL) + b"\x00" + bytes((H_CAL[0],))
        self.regs[0x88 : 0x88 + 26] = tp
        _h1, h2, h3, h4, h5, h6 = H_CAL
        self.regs[0xE1:0xE8] = struct.pack("<hB", h2, h3) + bytes(
            ((h4 >> 4) & 0xFF, (h4 & 0x0F) | ((h5 & 0x0F) << 4), (h5 >> 4) & 0xFF, h6 & 0xFF)
        )
        self.regs[0xF7:0xFF] = bytes((0x80, 0, 0, 0x80, 0, 0, 0x80, 0))  # "skipped" until measured
        self.pointer = 0
        self._busy = 0
        self.measurements = 0

    def write(self, data: bytes) -> None:
        self.pointer = data[0]
        for i, b in enumerate(data[1:]):
            reg = self.pointer + i
            self.regs[reg] = b
            if reg == 0xF4 and b & 0x03 in (0x01, 0x02):
                self._measure()

    def _measure(self) -> None:
        adc_p, adc_t, adc_h = raw_for(self.temp_c, self.pa, self.rh)
        self.regs[0xF7:0xFF] = bytes((
            adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
            adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
            adc_h >> 8, adc_h & 0xFF,
        ))
        self._busy = self.busy_reads
        self.measurements += 1

    def read(self, n: int) -> bytes:
        out = bytearray(self.regs[self.pointer : self.pointer + n])
        if self.pointer == 0xF3:
            if self._busy > 0:
                self._busy -= 1
                out[0] |= 0x08
            else:
                self.regs[0xF4] &= 0xFC  # back to sleep after the forced measurement
        return bytes(out)
