"""The channel registry: the implementations config/channels.py names, and their policy.

Adding a channel is one module in worker/channels/, its tests, and one line in
config/channels.py (docs/adding-a-channel.md): nothing here changes.
"""

from __future__ import annotations

import functools
import importlib

from config.channels import CHANNEL_SPECS
from config.retry import RetryPolicy
from config.settings import Settings
from worker.channels.base import DeliveryChannel, ScopeRule


@functools.cache
def channel_class(name: str) -> type[DeliveryChannel]:
    """The class that delivers the named channel (imported on first use)."""
    spec = next((s for s in CHANNEL_SPECS if s.name == name), None)
    if spec is None:
        known = ", ".join(s.name for s in CHANNEL_SPECS)
        raise ValueError(f"unknown channel {name!r}; known: {known}")
    module, _, attribute = spec.implementation.partition(":")
    cls: type[DeliveryChannel] = getattr(importlib.import_module(module), attribute)
    if cls.name != name:
        raise ValueError(f"{spec.implementation} delivers {cls.name!r}, not {name!r}")
    return cls


def make_channel(name: str, settings: Settings) -> DeliveryChannel:
    """Build the named channel from the settings."""
    return channel_class(name)(settings)  # type: ignore[call-arg]  # every channel takes them


def policy_for(settings: Settings, name: str) -> RetryPolicy:
    """The retry policy of one channel."""
    return channel_class(name).retry_policy(settings)


def pacing_for(settings: Settings, name: str) -> ScopeRule | None:
    """The pacing scopes of one channel's sends, or None when none is limited."""
    return channel_class(name).pacing(settings)
