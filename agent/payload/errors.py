"""The one error a payload codec raises, so callers catch exactly one thing."""

from __future__ import annotations


class PayloadError(ValueError):
    """A batch cannot be encoded or a payload cannot be decoded; the message names what and where."""
