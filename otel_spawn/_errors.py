"""The one exception type otel-spawn raises into the host: at configuration time only."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which one and how to fix it."""
