"""Bosch BME280 register layout and integer compensation, pure (reference methane-sensors.md §4.1).

C semantics: ``>>`` is arithmetic (Python's is too) and ``/`` truncates toward zero (``_cdiv``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from drivers.codec_error import CodecError

REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_DATA = 0xF7
REG_CALIB_TP = 0x88  # 26 bytes: T1..P9, (0xA0 unused), H1 at 0xA1
REG_CALIB_H = 0xE1  # 7 bytes
CHIP_ID_BME280 = 0x60
STATUS_MEASURING = 0x08
SKIPPED_TP = 0x80000
SKIPPED_H = 0x8000


@dataclass(frozen=True, slots=True)
class Calibration:
    t: tuple[int, int, int]
    p: tuple[int, int, int, int, int, int, int, int, int]
    h: tuple[int, int, int, int, int, int]


def _cdiv(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def parse_calibration(tp: bytes, h: bytes) -> Calibration:
    if len(tp) != 26 or len(h) != 7:
        raise CodecError("calibration blocks must be 26 and 7 bytes")
    t1, t2, t3, p1, p2, p3, p4, p5, p6, p7, p8, p9 = struct.unpack("<HhhHhhhhhhhh", tp[:24])
    h1 = tp[25]
    h2 = struct.unpack("<h", h[0:2])[0]
    h3 = h[2]
    e4 = h[3] - 256 if h[3] & 0x80 else h[3]
    e6 = h[5] - 256 if h[5] & 0x80 else h[5]
    h4 = (e4 << 4) | (h[4] & 0x0F)
    h5 = (e6 << 4) | (h[4] >> 4)
    h6 = h[6] - 256 if h[6] & 0x80 else h[6]
    if t1 == 0 or p1 == 0:
        raise CodecError("calibration is blank (T1 or P1 is zero): wrong chip or bus fault")
    return Calibration((t1, t2, t3), (p1, p2, p3, p4, p5, p6, p7, p8, p9), (h1, h2, h3, h4, h5, h6))


def split_data(data: bytes) -> tuple[int, int, int]:
    """(adc_P, adc_T, adc_H) from the 8-byte burst at 0xF7."""
    if len(data) != 8:
        raise CodecError("data burst is 8 bytes")
    adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
    adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
    adc_h = (data[6] << 8) | data[7]
    return adc_p, adc_t, adc_h


def t_fine(cal: Calibration, adc_t: int) -> int:
    t1, t2, t3 = cal.t
    v1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    v2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    return v1 + v2


def temperature_centi(tf: int) -> int:
    return (tf * 5 + 128) >> 8


def pressure_q24_8(cal: Calibration, tf: int, adc_p: int) -> int:
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = cal.p
    a = tf - 128000
    b = a * a * p6 + ((a * p5) << 17) + (p4 << 35)
    a = ((a * a * p3) >> 8) + ((a * p2) << 12)
    a = (((1 << 47) + a) * p1) >> 33
    if a == 0:
        return 0
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - b) * 3125, a)
    a = (p9 * (p >> 13) * (p >> 13)) >> 25
    b = (p8 * p) >> 19
    return ((p + a + b) >> 8) + (p7 << 4)


def humidity_q22_10(cal: Calibration, tf: int, adc_h: int) -> int:
    h1, h2, h3, h4, h5, h6 = cal.h
    x = tf - 76800
    x = ((((adc_h << 14) - (h4 << 20) - (h5 * x)) + 16384) >> 15) * (
        ((((((x * h6) >> 10) * (((x * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14
    )
    x = x - (((((x >> 15) * (x >> 15)) >> 7) * h1) >> 4)
    x = min(max(x, 0), 419430400)
    return x >> 12
