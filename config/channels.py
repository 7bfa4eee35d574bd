"""The delivery channels: the one table that producers and workers share.

A channel is a job's ``channel`` value, a queue (``mail.<name>``), a delivery task
(``maildispatch.deliver.<name>``) and an implementation in ``worker/channels/``: a class that
carries its policy (the account an owner connects for it, its retry policy, its pacing scopes,
whether it owns the return path; worker/channels/base.py). Adding a channel is that module and
one line here (docs/adding-a-channel.md). Producers read the names only: they never import the
worker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChannelSpec:
    """One delivery channel: its name, how people see it, and where it is implemented."""

    name: str
    #: how the Failed Sends page and the CLI show it
    title: str
    #: sends through an account the owner connects (a Gmail account, an SMTP server): its batch
    #: tasks carry one owner's jobs, and a send needs that owner's account
    owner_account: bool
    #: the class that delivers it, as ``module:Class`` (imported by the worker only)
    implementation: str


CHANNEL_SPECS: tuple[ChannelSpec, ...] = (
    ChannelSpec("msc", "MSC", False, "worker.channels.msc:MscChannel"),
    ChannelSpec("gmail", "Gmail", True, "worker.channels.gmail:GmailChannel"),
    ChannelSpec("smtp", "SMTP", True, "worker.channels.smtp:SmtpChannel"),
)

#: the channel names, in the table's order; the first is a job's default
CHANNELS: tuple[str, ...] = tuple(spec.name for spec in CHANNEL_SPECS)
DEFAULT_CHANNEL = CHANNELS[0]
TITLES: dict[str, str] = {spec.name: spec.title for spec in CHANNEL_SPECS}
#: the channels that send through an account the owner connects
OWNER_ACCOUNT: tuple[str, ...] = tuple(s.name for s in CHANNEL_SPECS if s.owner_account)
