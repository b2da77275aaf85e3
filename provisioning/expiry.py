"""How long the identity's certificate has left, for the agent's status and its start-up warning.

The date comes from ``identity.json`` (``not_after``, recorded when provisioning or rotation stored
the certificate), so a running agent never loads a certificate parser for it (cryptography costs a
gateway ~8 MB of RSS); identities written before that field existed fall back to parsing the file.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from provisioning.files import CredentialError
from provisioning.identity import Identity

log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class ExpiryStatus:
    certificate_id: str
    not_after: dt.datetime
    days_left: float
    warning: bool
    expired: bool

    @property
    def message(self) -> str:
        when = self.not_after.strftime("%Y-%m-%d %H:%M UTC")
        if self.expired:
            return f"certificate {self.certificate_id[:12]} EXPIRED on {when}; run methane-agent rotate-cert"
        if self.warning:
            return (f"certificate {self.certificate_id[:12]} expires in {self.days_left:.0f} days ({when}); "
                    "run methane-agent rotate-cert")
        return f"certificate {self.certificate_id[:12]} valid until {when}"

    def as_dict(self) -> dict[str, object]:
        return {"certificate_id": self.certificate_id, "not_after": self.not_after.isoformat(),
                "days_left": round(self.days_left, 1), "warning": self.warning, "expired": self.expired,
                "message": self.message}


def not_after(identity: Identity) -> dt.datetime:
    if identity.not_after:
        try:
            when = dt.datetime.fromisoformat(identity.not_after)
        except ValueError:
            raise CredentialError(f"identity not_after {identity.not_after!r} is not an ISO 8601 time") from None
        return when if when.tzinfo else when.replace(tzinfo=dt.UTC)
    from provisioning import keys

    return keys.load_cert(identity.cert_file).not_valid_after_utc


def expiry_status(
    identity: Identity, now: dt.datetime | None = None, warn_days: int = EXPIRY_WARNING_DAYS
) -> ExpiryStatus:
    """For the agent's status and a daily log line: how long the current certificate has left."""
    end = not_after(identity)
    now = now or dt.datetime.now(dt.UTC)
    days_left = (end - now).total_seconds() / 86400
    return ExpiryStatus(identity.certificate_id, end, days_left, days_left <= warn_days, days_left <= 0)


def log_expiry(identity: Identity, logger: logging.Logger = log, now: dt.datetime | None = None) -> ExpiryStatus:
    st = expiry_status(identity, now)
    if st.warning:
        logger.warning(st.message, extra={"certificate_id": st.certificate_id, "days_left": round(st.days_left, 1)})
    return st
