"""Errors a pure codec raises. Parsers raise only these on bad input, so a driver can turn any of them
into a ``DriverError`` with a stable ``kind`` and the property tests can assert nothing else escapes."""

from __future__ import annotations


class CodecError(ValueError):
    """A frame could not be decoded. ``kind`` matches the ``DriverError`` kind the driver reports."""

    kind = "bad_frame"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ChecksumError(CodecError):
    kind = "checksum_error"


class NakError(CodecError):
    """The device answered with a negative acknowledgement; ``code`` is its reason, when it gives one."""

    kind = "nak"

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code
