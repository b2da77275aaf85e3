"""NMEA GPS receiver emulator: streams GGA and RMC with an advancing UTC clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.devices.pty_host import EmulatedDevice


def sentence(body: str) -> bytes:
    cs = 0
    for ch in body.encode():
        cs ^= ch
    return f"${body}*{cs:02X}\r\n".encode()


def _coord(value: float, deg_digits: int, pos: str, neg: str) -> tuple[str, str]:
    hemi = pos if value >= 0 else neg
    v = abs(value)
    deg = int(v)
    minutes = (v - deg) * 60
    return f"{deg:0{deg_digits}d}{minutes:07.4f}", hemi


class NmeaDevice(EmulatedDevice):
    frame_start_bytes = b"$"

    def __init__(self, lat: float = 48.1173, lon: float = 11.5166667, alt: float = 545.4, fix: int = 1,
                 start: datetime | None = None, interval_s: float = 0.05, frozen: bool = False) -> None:
        super().__init__()
        self.lat, self.lon, self.alt, self.fix = lat, lon, alt, fix
        self.now = start or datetime.now(UTC).replace(microsecond=0)
        self.tick_interval_s = interval_s
        self.frozen = frozen

    def tick(self) -> bytes:
        if not self.frozen:
            self.now += timedelta(seconds=1)
        t = self.now.strftime("%H%M%S")
        if self.fix:
            la, ns = _coord(self.lat, 2, "N", "S")
            lo, ew = _coord(self.lon, 3, "E", "W")
            gga = f"GPGGA,{t},{la},{ns},{lo},{ew},{self.fix},08,0.9,{self.alt:.1f},M,46.9,M,,"
            rmc = f"GPRMC,{t},A,{la},{ns},{lo},{ew},000.0,000.0,{self.now.strftime('%d%m%y')},003.1,W"
        else:
            gga = f"GPGGA,{t},,,,,0,00,,,M,,M,,"
            rmc = f"GPRMC,{t},V,,,,,,,{self.now.strftime('%d%m%y')},,"
        return sentence("GPGSV,1,1,00") + sentence(gga) + sentence(rmc)

    def corrupt(self, reply: bytes) -> bytes:
        lines = reply.split(b"\r\n")
        out = [ln[:-1] + (b"0" if ln[-1:] != b"0" else b"1") if ln else ln for ln in lines]
        return b"\r\n".join(out)

    def take_request(self, buf: bytes) -> tuple[bytes | None, int]:
        return None, len(buf)  # a receiver ignores what the host sends (no configuration here)

    def reply(self, request: bytes) -> bytes:
        return b""

    def nak(self, request: bytes) -> bytes:
        return b""
