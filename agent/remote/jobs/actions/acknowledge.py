"""``acknowledge-alarm``: acknowledge the latched alarm(s) of a sensor from the cloud, as the
technician's ``methane-agent alarms ack`` does on site. An acknowledgement that matches no latched,
unacknowledged alarm is REJECTED with the reason and changes nothing."""

from __future__ import annotations

from pydantic import Field

from agent.alarms.engine import AckError
from agent.config import SENSOR_ID
from agent.remote.jobs.actions.base import Action, ActionContext, Params, Progress, Rejected, Result


class AcknowledgeParams(Params):
    sensor_id: str = Field(..., pattern=SENSOR_ID)
    quantity: str | None = Field(None, pattern=r"^[A-Za-z0-9_]{1,64}$", description="default: every quantity")
    by: str | None = Field(None, max_length=64, description="who acknowledged (operator name), for the event")


async def run(ctx: ActionContext, params: AcknowledgeParams, progress: Progress) -> Result:
    del progress
    if ctx.ports.acknowledge_alarm is None:
        raise Rejected("alarms are not running on this device")
    try:
        events = ctx.ports.acknowledge_alarm(params.sensor_id, params.quantity, params.by or "cloud-job")
    except AckError as exc:
        raise Rejected(str(exc)) from None
    acked = [e for e in events if e["type"] == "acknowledged"]
    return Result({
        "acknowledged": ",".join(f"{e['sensor_id']}/{e['quantity']}" for e in acked),
        "cleared": str(sum(e["type"] == "cleared" for e in events)),
    })


ACTION = Action("acknowledge-alarm", AcknowledgeParams, run)
