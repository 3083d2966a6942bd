"""Simulated cloud provider: authenticate, provision a VM, install and configure the agent."""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry import trace


class SpawnError(RuntimeError):
    """A provisioning step failed."""


@dataclass
class Plan:
    agent: str
    cloud: str
    name: str
    fail_at: str | None = None
    fail_message: str | None = None
    interrupt_at: str | None = None
    delays: dict[str, float] = field(default_factory=dict)


@dataclass
class Vm:
    id: str
    ip: str
    agent: str
    cloud: str


def work(plan: Plan, step: str, default_delay: float) -> None:
    """Pretend to work on `step`; fail or get interrupted there if the plan says so."""
    time.sleep(plan.delays.get(step, default_delay))
    if plan.interrupt_at == step:
        raise KeyboardInterrupt
    if plan.fail_at == step:
        raise SpawnError(plan.fail_message or f"{step} failed: ssh exited with status 255")


def note(key: str, value: str) -> None:
    """Record a detail on the current span, as a careless orchestrator would (unscrubbed)."""
    trace.get_current_span().set_attribute(key, value)


def authenticate(plan: Plan) -> None:
    note("spawn.credentials_file", str(Path.home() / f".config/spawn/{plan.cloud}.json"))
    work(plan, "cloud_authed", 0.05)


def prepare_credentials(plan: Plan) -> None:
    key = os.environ.get("OPENROUTER_API_KEY", "")
    note("spawn.env", f"OPENROUTER_API_KEY={key}" if key else "OPENROUTER_API_KEY unset")
    work(plan, "credentials_ready", 0.03)


def create_vm(plan: Plan) -> Vm:
    rng = random.Random()
    ip = f"{rng.randint(11, 200)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    vm = Vm(id=f"{plan.cloud}-{rng.randrange(16**8):08x}", ip=ip, agent=plan.agent, cloud=plan.cloud)
    note("spawn.vm.public_ip", ip)
    note("spawn.vm.id", vm.id)
    work(plan, "vm_ready", 0.15)
    return vm


def install_agent(plan: Plan, vm: Vm) -> None:
    note("spawn.ssh", f"ssh -i {Path.home()}/.ssh/id_ed25519 root@{vm.ip}")
    work(plan, "install_completed", 0.12)


def configure_agent(plan: Plan, vm: Vm) -> None:
    key = os.environ.get("OPENROUTER_API_KEY", "sk-or-v1-xxxx")
    note("spawn.launch_command", f"OPENROUTER_API_KEY={key} {plan.agent} --model openrouter/auto")
    work(plan, "configure_completed", 0.05)


def prelaunch(plan: Plan, vm: Vm) -> None:
    work(plan, "prelaunch_completed", 0.04)


def handoff(plan: Plan, vm: Vm) -> None:
    note("spawn.handoff", f"ssh -t root@{vm.ip} {plan.agent}")
    work(plan, "handoff", 0.02)
