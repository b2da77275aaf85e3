"""SGX / Amphenol INIR and INIR2 ASCII-hex protocol, pure (reference methane-sensors.md §1.3).

Commands are ``[`` letter ``]``. The sensor answers ``[AK]``/``[NA]`` as the ASCII hex text
``5b414b5d``/``5b4e415d`` and outputs frames of 32-bit words, each as 8 hex digits plus a two-byte
terminator: start ``0000005b``, concentration (ppm), faults, temperature (Kx10), [reference, active
in engineering/on-demand mode], CRC (32-bit sum of the bytes of every word from the start word to the
last data word), its complement, end ``0000005d``. The terminator order is unconfirmed; the parser
accepts any whitespace between words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drivers.codec_error import ChecksumError, CodecError, NakError

START_WORD = 0x5B
END_WORD = 0x5D
ACK_TOKEN = b"5b414b5d"
NAK_TOKEN = b"5b4e415d"
_TOKEN = re.compile(rb"\S+")
_HEX8 = re.compile(rb"[0-9a-fA-F]{8}")
NORMAL_WORDS = 7
ENGINEERING_WORDS = 9

FAULT_NIBBLES = {
    0: ("gas sensor", {1: "sensor not present", 2: "temperature sensor failed", 3: "active or reference weak",
                       4: "first-time configuration"}),
    1: ("power/reset", {1: "power-on reset", 2: "watchdog reset", 3: "software reset", 4: "external pin reset"}),
    2: ("ADC", {1: "concentration not yet stable"}),
    3: ("DAC", {1: "DAC off", 2: "DAC disabled in configuration mode"}),
    4: ("UART", {1: "break", 2: "framing error", 3: "parity error", 4: "overrun"}),
    5: ("timers", {1: "timer1", 2: "timer2/watchdog"}),
    6: ("general", {1: "over range", 2: "under range", 3: "warm-up, data not valid"}),
    7: ("memory", {1: "cannot store", 2: "cannot read"}),
}


def command(letter: str) -> bytes:
    if len(letter) != 1 or not "A" <= letter <= "Z":
        raise ValueError(f"INIR command is one capital letter, not {letter!r}")
    return b"[" + letter.encode() + b"]"


def word_crc(words: list[int]) -> int:
    return sum(sum(w.to_bytes(4, "big")) for w in words) & 0xFFFFFFFF


def extract(buf: bytes) -> tuple[bytes | None, int]:
    """Find the next frame, or an ``[AK]``/``[NA]`` token, in a stream of words."""
    tokens = list(_TOKEN.finditer(buf))
    # A token touching the end of the buffer may still be growing unless it is a full 8-digit word.
    if tokens and tokens[-1].end() == len(buf) and len(tokens[-1].group()) < 8:
        tokens.pop()
    if not tokens:
        return None, 0
    for idx, tok in enumerate(tokens):
        text = tok.group().lower()
        if text in (ACK_TOKEN, NAK_TOKEN):
            return buf[tok.start() : tok.end()], tok.end()
        # Line noise may be glued to the start word, so only its last 8 characters must match.
        if not text.endswith(b"0000005b"):
            continue
        begin = tok.end() - 8
        rest = tokens[idx:]
        for length in (NORMAL_WORDS, ENGINEERING_WORDS):
            if len(rest) < length:
                return None, begin  # wait for more words
            if rest[length - 1].group().lower() == b"0000005d":
                return buf[begin : rest[length - 1].end()], rest[length - 1].end()
        # a data word that happened to read 0000005b, or a truncated frame: keep scanning
    return None, tokens[-1].end()


@dataclass(frozen=True, slots=True)
class InirFrame:
    concentration_ppm: int
    faults: int
    temperature_k10: int
    reference: int | None = None
    active: int | None = None

    @property
    def temperature_c(self) -> float:
        return round(self.temperature_k10 / 10.0 - 273.15, 2)


def parse(frame: bytes) -> InirFrame:
    """Check one frame (or an ACK/NAK token); raises ``NakError`` for ``[NA]``."""
    tokens = frame.split()
    if len(tokens) == 1 and tokens[0].lower() == NAK_TOKEN:
        raise NakError("sensor answered [NA] (command not acknowledged)")
    if len(tokens) == 1 and tokens[0].lower() == ACK_TOKEN:
        raise CodecError("got [AK] where a data frame was expected")
    if len(tokens) not in (NORMAL_WORDS, ENGINEERING_WORDS):
        raise CodecError(f"frame has {len(tokens)} words, expected 7 or 9")
    if not all(_HEX8.fullmatch(t) for t in tokens):
        raise CodecError("frame word is not 8 hex digits")
    words = [int(t, 16) for t in tokens]
    if words[0] != START_WORD or words[-1] != END_WORD:
        raise CodecError("frame does not start with 0000005b and end with 0000005d")
    data = words[:-3]
    crc = word_crc(data)
    if words[-3] != crc or words[-2] != 0xFFFFFFFF - crc:
        raise ChecksumError(f"CRC {words[-3]:08x}/{words[-2]:08x}, computed {crc:08x}/{0xFFFFFFFF - crc:08x}")
    conc = words[1] - (1 << 32) if words[1] & 0x80000000 else words[1]  # signed: NDIR zero noise [U]
    if len(words) == ENGINEERING_WORDS:
        return InirFrame(conc, words[2], words[3], words[4], words[5])
    return InirFrame(conc, words[2], words[3])


def check_ack(reply: bytes, sent: bytes) -> bool:
    """Judge what came back after command ``sent``: True for ``[AK]``, False for a data frame (a streaming
    sensor may still send one before it answers; the caller keeps reading); ``NakError`` for ``[NA]``."""
    text = reply.strip().lower()
    if text == ACK_TOKEN:
        return True
    if text == NAK_TOKEN:
        raise NakError(f"sensor answered [NA] to {sent.decode('ascii', 'replace')}")
    if text.startswith(b"0000005b") or text.endswith(b"0000005d"):
        return False
    raise CodecError(f"expected [AK] after {sent.decode('ascii', 'replace')}, got {reply[:24]!r}")


def fault_nibbles(faults: int) -> dict[int, int]:
    """Nibbles that are not 0xA ("no error"), by position (0 = least significant)."""
    return {i: (faults >> (4 * i)) & 0xF for i in range(8) if (faults >> (4 * i)) & 0xF != 0xA}


def describe_faults(faults: int) -> list[str]:
    out = []
    for pos, val in fault_nibbles(faults).items():
        part, codes = FAULT_NIBBLES[pos]
        out.append(f"{part}: {codes.get(val, f'code {val:x}')}")
    return out
