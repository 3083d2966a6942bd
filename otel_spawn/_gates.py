"""Privacy gates: is telemetry on, and which setting decided it.

Order (first match wins): the `enabled=` argument, OTEL_SDK_DISABLED, DO_NOT_TRACK, the app's own
variable set to a false value, the test gate (off under pytest unless a test turns it on), the app's
own variable set to a true value, the user's persisted `otel-spawn enable|disable`, then on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from otel_spawn import _constants as c
from otel_spawn._guard import under_pytest
from otel_spawn._state import read_choice

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Decision:
    """Whether telemetry is on, and the setting that decided it."""

    enabled: bool
    reason: str

    def __str__(self) -> str:
        return f"{'on' if self.enabled else 'off'} ({self.reason})"


def _flag(environ: Mapping[str, str], name: str) -> bool | None:
    value = environ.get(name, "").strip().lower()
    return True if value in _TRUE else False if value in _FALSE else None


def decide(
    explicit: bool | None,
    opt_out_env: str,
    home: Path,
    environ: Mapping[str, str] | None = None,
) -> Decision:
    """Decide whether telemetry is on. Reads the environment and the state dir; writes nothing."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return Decision(explicit, f"configure(enabled={explicit})")
    if _flag(env, c.ENV_SDK_DISABLED):
        return Decision(False, f"{c.ENV_SDK_DISABLED}={env[c.ENV_SDK_DISABLED]}")
    dnt = env.get(c.ENV_DO_NOT_TRACK, "").strip()
    if dnt and dnt.lower() not in _FALSE:
        return Decision(False, f"{c.ENV_DO_NOT_TRACK}={dnt}")
    app_flag = _flag(env, opt_out_env)
    if app_flag is False:
        return Decision(False, f"{opt_out_env}={env[opt_out_env]}")
    if under_pytest() and not _flag(env, c.ENV_ENABLE_IN_TESTS):
        return Decision(
            False, f"running under pytest (set {c.ENV_ENABLE_IN_TESTS}=1 in a test to turn it on)"
        )
    if app_flag:
        return Decision(True, f"{opt_out_env}={env[opt_out_env]}")
    choice = read_choice(home)
    if choice is not None:
        return Decision(choice == "enabled", f"`otel-spawn {choice[:-1]}` saved in {home}")
    return Decision(True, "default")
