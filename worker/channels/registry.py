"""The channel registry: adding a channel is one module, one test file and one line here."""

from __future__ import annotations

from collections.abc import Callable

from config.settings import Settings
from worker.channels.base import DeliveryChannel
from worker.channels.gmail import GmailChannel
from worker.channels.msc import MscChannel
from worker.channels.smtp import SmtpChannel

#: channel name -> factory; adding a channel is one module, one test file and one line here
REGISTRY: dict[str, Callable[[Settings], DeliveryChannel]] = {
    "msc": MscChannel,
    "gmail": GmailChannel,
    "smtp": SmtpChannel,
}


def make_channel(name: str, settings: Settings) -> DeliveryChannel:
    """Build the named channel from the settings."""
    try:
        factory = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown channel {name!r}; known: {', '.join(REGISTRY)}") from None
    return factory(settings)
