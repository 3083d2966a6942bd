"""The interactive picker, simulated: the choices arrive as command-line options.

Every function returns what it decided, which is all the funnel spec needs to turn a call into a
product event (`agent_selected {agent}`, ...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

AGENTS = ("claude", "codex", "gemini", "aider")
CLOUDS = ("hetzner", "gcp", "aws", "digitalocean")


@dataclass(frozen=True)
class Choice:
    agent: str
    cloud: str
    name: str


def launch_mode(requested_agent: str | None) -> str:
    return "interactive" if requested_agent is None else "direct"


def choose_agent(requested: str | None) -> str:
    return requested or random.choice(AGENTS)


def choose_cloud(requested: str | None) -> str:
    return requested or random.choice(CLOUDS)


def preflight(agent: str, cloud: str) -> bool:
    return agent in AGENTS and cloud in CLOUDS


def enter_name(requested: str | None, agent: str) -> str:
    return requested or f"{agent}-{random.randrange(16**4):04x}"


def run(agent: str | None, cloud: str | None, name: str | None) -> Choice:
    """The whole picker, in order: mode, agent, cloud, preflight, name."""
    launch_mode(agent)
    chosen_agent = choose_agent(agent)
    chosen_cloud = choose_cloud(cloud)
    preflight(chosen_agent, chosen_cloud)
    return Choice(chosen_agent, chosen_cloud, enter_name(name, chosen_agent))
