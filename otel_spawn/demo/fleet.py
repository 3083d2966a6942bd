"""The simulated cloud's inventory of VMs: register, list, connect, delete.

Kept as JSON in `SPAWN_DEMO_HOME` (default `~/.spawn-demo`). Business code only: the funnel spec
turns `register`, `connect` and `delete` into lifecycle events.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .cloud import SpawnError, Vm


class UnknownVm(SpawnError):
    """No VM with that id."""


def _inventory() -> Path:
    return Path(os.environ.get("SPAWN_DEMO_HOME") or Path.home() / ".spawn-demo") / "vms.json"


def _load() -> dict[str, dict[str, str | float]]:
    try:
        data = json.loads(_inventory().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(vms: dict[str, dict[str, str | float]]) -> None:
    path = _inventory()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(vms, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def register(vm: Vm) -> Vm:
    """Add a freshly provisioned VM to the inventory."""
    vms = _load()
    vms[vm.id] = {"ip": vm.ip, "agent": vm.agent, "cloud": vm.cloud, "created": time.time()}
    _save(vms)
    return vm


def list_vms() -> list[Vm]:
    return [Vm(vm_id, str(v["ip"]), str(v["agent"]), str(v["cloud"])) for vm_id, v in _load().items()]


def _find(vm_id: str) -> Vm:
    for vm in list_vms():
        if vm.id == vm_id:
            return vm
    raise UnknownVm(f"no VM {vm_id!r}: see `otel-spawn demo list`")


def connect(vm_id: str) -> Vm:
    """Reconnect to a VM (simulated ssh)."""
    vm = _find(vm_id)
    time.sleep(0.02)
    return vm


def delete(vm_id: str, *, fail: bool = False) -> Vm:
    """Destroy a VM; `fail` simulates the provider refusing (nothing is deleted)."""
    vm = _find(vm_id)
    if fail:
        raise SpawnError(f"the provider refused to delete {vm_id}: try again later")
    vms = _load()
    vms.pop(vm_id, None)
    _save(vms)
    return vm
