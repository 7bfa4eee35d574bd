"""An unsubscribe taken: the person on the owner's suppression list, and its event.

Both ways in end here: the one-click ``POST /u/{token}`` (worker/api/unsubscribe.py) and a mail
to the ``mailto:`` address of the List-Unsubscribe header, which the bounce server takes and
bounce ingest reads (worker/bounces/intake/ingest.py). Taking one twice changes nothing, and
its event keeps its id.
"""

from __future__ import annotations

import redis

from config import keys
from config.events import EventType, add_events, encode, job_data
from config.settings import Settings
from worker.message.unsubscribe import Unsubscribe
from worker.store import Store, repo


def unsubscribe(store: Store, client: redis.Redis, settings: Settings, who: Unsubscribe) -> None:
    """Suppress ``who.recipient`` for ``who.owner`` (reason ``unsubscribe``, every channel)."""
    with store.session() as session:
        repo.suppress(session, who.owner, [who.recipient], "unsubscribe", who.job_id)
    if settings.events_retention <= 0:
        return
    channel = client.hget(keys.job(who.job_id), "channel")  # gone after its TTL: unknown then
    name = channel.decode() if isinstance(channel, bytes) else ""
    data = job_data(who.job_id, who.owner, name, [who.recipient], None)
    pipe = client.pipeline(transaction=False)
    event = (who.owner, encode(EventType.UNSUBSCRIBED, data, who.recipient))
    add_events(pipe, who.job_id, [event], settings.events_retention)
    pipe.execute()
