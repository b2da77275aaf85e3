"""``calibrate-sensor``: zero (in zero air) or span (with the span gas value) on a running sensor
whose driver supports it, on that sensor's own thread so it never interleaves with a read."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from agent.config import SENSOR_ID
from agent.feature import SensorNotRunning
from agent.remote.jobs.actions.base import Action, ActionContext, Failed, Params, Progress, Rejected, Result
from drivers.base import DriverError


class CalibrateParams(Params):
    sensor_id: str = Field(..., pattern=SENSOR_ID)
    kind: Literal["zero", "span"]
    value: float | None = Field(None, gt=0, lt=1e7, description="span gas concentration, driver's unit")

    @model_validator(mode="after")
    def _span_value(self) -> CalibrateParams:
        if self.kind == "span" and self.value is None:
            raise ValueError("span calibration needs value")
        if self.kind == "zero" and self.value is not None:
            raise ValueError("zero calibration takes no value")
        return self


async def run(ctx: ActionContext, params: CalibrateParams, progress: Progress) -> Result:
    await progress({"step": f"calibrating {params.kind}"})
    try:
        await ctx.ports.calibrate(params.sensor_id, params.kind, params.value, 30.0)
    except SensorNotRunning:
        raise Rejected(f"sensor {params.sensor_id!r} is not running on this device") from None
    except DriverError as exc:
        if exc.kind == "unsupported":
            raise Rejected(exc.message) from None
        raise Failed(f"{exc.kind}: {exc.message}") from None
    except OSError as exc:
        raise Failed(f"io: {exc}") from None
    except TimeoutError:
        raise Failed("the sensor did not complete calibration within 30 s") from None
    return Result({"sensor": params.sensor_id, "kind": params.kind})


ACTION = Action("calibrate-sensor", CalibrateParams, run)
