"""Batch payload encodings: one MQTT message carries one ``Batch`` of readings.

``json`` is readable and queryable by IoT rules SQL; ``compact`` is a columnar binary format
about 200 times smaller. Both round-trip every reading exactly; docs/payload.md has the formats.
"""

from agent.payload.batch import Batch, batch_id
from agent.payload.codec import (
    CONTENT_TYPES,
    ENCODINGS,
    MAX_PAYLOAD_BYTES,
    USER_PROPERTY,
    content_type,
    decode,
    decode_columns,
    encode,
    encoding_of,
    fit,
    sniff,
)
from agent.payload.errors import PayloadError

__all__ = [
    "CONTENT_TYPES",
    "ENCODINGS",
    "MAX_PAYLOAD_BYTES",
    "USER_PROPERTY",
    "Batch",
    "PayloadError",
    "batch_id",
    "content_type",
    "decode",
    "decode_columns",
    "encode",
    "encoding_of",
    "fit",
    "sniff",
]
