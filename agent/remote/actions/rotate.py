"""``rotate-certificate``: provisioning.rotation.rotate_certificate (new key on the device, CSR,
RegisterThing, proven by a fresh connection before the switch). On success the final status is
reported and then the agent restarts to connect with the new certificate; on failure the old
identity stays in force (FAILED with the reason)."""

from __future__ import annotations

import asyncio

from agent.remote.actions import Action, ActionContext, Failed, Params, Progress, Result


class NoParams(Params):
    pass


async def run(ctx: ActionContext, params: NoParams, progress: Progress) -> Result:
    from provisioning import identity as ident_mod
    from provisioning.flow import ProvisioningBusy
    from provisioning.rotation import RotationFailed, rotate_certificate
    from provisioning.session import Endpoint

    conf = ctx.agent.conf
    try:
        ident = ident_mod.load(conf.state_dir)
    except ident_mod.IdentityError as exc:
        raise Failed(str(exc)) from None
    host = conf.connection.endpoint or (ident.endpoint if ident else "")
    endpoint = Endpoint(host, conf.connection.port, conf.connection.ca_file)
    await progress({"step": "rotating"})
    try:
        res = await asyncio.to_thread(
            rotate_certificate, conf.state_dir, endpoint, key_type=conf.provisioning.key_type
        )
    except (RotationFailed, ProvisioningBusy) as exc:
        raise Failed(str(exc)) from None
    return Result(
        {"new_certificate_id": res.new_certificate_id[:64], "not_after": res.not_after.isoformat()},
        restart_after=True,
    )


ACTION = Action("rotate-certificate", NoParams, run)
