"""The unit of data that flows sensor -> spool -> uplink: one type from the sampler to the wire."""

from __future__ import annotations

from dataclasses import dataclass

UNNUMBERED = 0  # ``seq`` of a reading the spool has not taken yet (real numbers start at 1)


@dataclass(frozen=True, slots=True)
class Reading:
    """A measurement; once the spool took it, also its place in the device's history.

    ``seq`` is per device, never reused within the spool's epoch and gapless across restarts that
    lost nothing: the cloud proves completeness and drops duplicates with it. A reading built by the
    sampler has ``seq == UNNUMBERED`` until ``Spool.append`` numbers it. ``ts_ms`` is wall time
    (UTC ms) and ``clock_synced`` says whether that wall time could be trusted when it was taken (a
    Pi has no RTC).
    """

    seq: int
    ts_ms: int
    clock_synced: bool
    sensor_id: str
    quantity: str
    value: float
    unit: str
    flags: tuple[str, ...] = ()
    alarm: bool = False

    @classmethod
    def new(
        cls,
        ts_ms: int,
        clock_synced: bool,
        sensor_id: str,
        quantity: str,
        value: float,
        unit: str,
        flags: tuple[str, ...] = (),
        alarm: bool = False,
    ) -> Reading:
        """A reading as a sensor produced it, before the spool gave it a sequence number."""
        return cls(UNNUMBERED, ts_ms, clock_synced, sensor_id, quantity, value, unit, flags, alarm)

    def numbered(self, seq: int) -> Reading:
        # The constructor, not dataclasses.replace (several times slower; once per reading).
        return Reading(seq, self.ts_ms, self.clock_synced, self.sensor_id, self.quantity, self.value, self.unit,
                       self.flags, self.alarm)


# The name the sampler and older callers use for a reading before the spool numbered it: the same
# type, built by ``Reading.new`` (kept so code written against ``agent.spool.NewReading`` works).
NewReading = Reading.new
