"""TI ADS1115 register values and the MOX load-resistor maths, pure (reference §3.1-3.4)."""

from __future__ import annotations

from drivers.codec_error import CodecError

REG_CONVERSION = 0x00
REG_CONFIG = 0x01
OS_BIT = 0x8000
PGA = {6.144: 0b000, 4.096: 0b001, 2.048: 0b010, 1.024: 0b011, 0.512: 0b100, 0.256: 0b101}
DATA_RATE = {8: 0b000, 16: 0b001, 32: 0b010, 64: 0b011, 128: 0b100, 250: 0b101, 475: 0b110, 860: 0b111}
FULL_SCALE_CODE = 0x7FFF


def single_shot_config(channel: int, fsr_v: float, data_rate: int) -> int:
    """OS=1 (start), MUX=1xx (AINx vs GND), PGA, MODE=1 (single shot), DR, comparator disabled."""
    if not 0 <= channel <= 3:
        raise ValueError("channel is 0..3")
    return OS_BIT | ((0b100 | channel) << 12) | (PGA[fsr_v] << 9) | 0x0100 | (DATA_RATE[data_rate] << 5) | 0x0003


def conversion_volts(raw: bytes, fsr_v: float) -> tuple[int, float]:
    if len(raw) != 2:
        raise CodecError("conversion register is 2 bytes")
    code = int.from_bytes(raw, "big", signed=True)
    return code, code * fsr_v / 32768.0


def sensor_resistance(v_rl: float, vc_v: float, rl_ohm: float) -> float:
    """Rs = (Vc / V_RL - 1) * RL (Figaro load-resistor circuit); needs 0 < V_RL < Vc."""
    if not 0 < v_rl < vc_v:
        raise CodecError(f"load-resistor voltage {v_rl:.4f} V is outside (0, {vc_v} V): open or shorted sensor")
    return (vc_v / v_rl - 1.0) * rl_ohm


def ppm_from_ratio(ratio: float, a: float, b: float) -> float:
    """Power-law sensitivity curve ppm = a * (Rs/R0)^b (log-log straight line)."""
    if ratio <= 0:
        raise CodecError("Rs/R0 must be positive")
    return a * ratio**b
