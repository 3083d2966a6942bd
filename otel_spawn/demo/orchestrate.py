"""The launch flow: picker, then the provisioning steps in order."""

from __future__ import annotations

from . import cloud, fleet, picker
from .cloud import Plan, Vm


def launch(
    *,
    agent: str | None,
    cloud_name: str | None,
    name: str | None,
    ref: str | None,
    fail_at: str | None = None,
    fail_message: str | None = None,
    interrupt_at: str | None = None,
    delays: dict[str, float] | None = None,
) -> Vm:
    """Run one launch; raises SpawnError on a failed step and KeyboardInterrupt when interrupted."""
    choice = picker.run(agent, cloud_name, name)
    plan = Plan(choice.agent, choice.cloud, choice.name, fail_at, fail_message, interrupt_at, delays or {})
    cloud.authenticate(plan)
    cloud.prepare_credentials(plan)
    vm = fleet.register(cloud.create_vm(plan))
    cloud.install_agent(plan, vm)
    cloud.configure_agent(plan, vm)
    cloud.prelaunch(plan, vm)
    cloud.handoff(plan, vm)
    return vm
