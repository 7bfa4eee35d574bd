"""The front door: validate ``SendJob``s and enqueue them (Python API, CLI, HTTP intake).

``producers`` never imports ``worker``: a producing service needs only this package and ``config``.
"""

from producers.client import Dispatcher, send, send_many
from producers.job import Attachment, Channel, InvalidJob, Mailbox, SendJob

__all__ = [
    "Attachment",
    "Channel",
    "Dispatcher",
    "InvalidJob",
    "Mailbox",
    "SendJob",
    "send",
    "send_many",
]
