"""Jobs in their queue form: the JSON of a batch task's jobs, and what Flower and logs show of a
batch task (ids, owners, channel and count, never content)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import islice
from typing import Any

import orjson
from celery import signals

from config import fastjson
from config.celery import DELIVER_TASK
from config.channels import OWNER_ACCOUNT
from producers.job import SendJob


def batch_key(channel: str, owner: str) -> tuple[str, str]:
    """The jobs one batch task may carry: one channel, and one owner where the channel sends
    through the owner's account (config/channels.py)."""
    return channel, owner if channel in OWNER_ACCOUNT else ""


_DELIVER_NAMES = {name: channel for channel, name in DELIVER_TASK.items()}


@signals.before_task_publish.connect
def _hide_arguments(
    sender: str | None = None, body: Any = None, headers: dict[str, Any] | None = None, **_: Any
) -> None:
    """Every publish of a delivery task (first send, retry, republish) shows ids only."""
    if headers is None or sender not in _DELIVER_NAMES:
        return
    args = body[0] if isinstance(body, tuple | list) and body else ()
    jobs = args[0] if args and isinstance(args[0], list | orjson.Fragment) else []
    headers["kwargsrepr"] = "{}"
    if isinstance(jobs, orjson.Fragment):
        return  # encoded by Dispatcher, which names the jobs itself (and a Fragment's repr is bare)
    headers["argsrepr"] = task_argsrepr(
        [j for j in jobs if isinstance(j, dict)], _DELIVER_NAMES[sender]
    )


def task_argsrepr(jobs: Sequence[Mapping[str, Any]], channel: str) -> str:
    """What Flower and logs show of a batch: ids, owners, channel and count, never content."""
    return argsrepr(
        [j.get("id") for j in jobs[:3]], {j.get("owner") for j in jobs}, channel, len(jobs)
    )


def argsrepr(first_ids: Sequence[Any], owners: Iterable[Any], channel: str, count: int) -> str:
    """``jobs=[first ids] +N more owners=[...] channel=... count=N``."""
    ids = [str(i) for i in first_ids]
    shown = sorted({str(o) for o in owners})
    more = f" +{count - 3} more" if count > 3 else ""
    return f"jobs={ids}{more} owners={shown[:3]} channel={channel} count={count}"


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


_SET_BY_WIRE = {"id", "channel"}


def job_wire(job: SendJob, job_id: str | None = None) -> dict[str, Any]:
    """The JSON form of a job as it travels on the queue (defaults left out to keep it small).

    ``job_id`` is ``str(job.id)`` when the caller has it already.
    """
    # id and channel are set below: excluded from the dump, whose comparison with the defaults
    # would otherwise draw a fresh uuid4 for every job (a third of the dump's cost)
    wire = job.model_dump(mode="json", exclude_defaults=True, exclude=_SET_BY_WIRE)
    wire["id"] = job_id or str(job.id)
    wire["channel"] = str(job.channel)
    return wire


#: a job on its way to the queue: (id, owner, the data as given or None, the validated job or
#: None); its queue form is made when its batch is published (see encode_batch)
Entry = tuple[str, str, "dict[str, Any] | None", "SendJob | None"]


def encode_batch(entries: Sequence[Entry], channel: str) -> orjson.Fragment:
    """The JSON array of a batch's jobs, in their queue form.

    A job given as a dict goes as the caller gave it, with its id and channel: a worker validates
    it into the same SendJob as this producer did (one model, one set of rules), so the
    validated job need not be dumped (a sixth of ``send_many``'s cost per job). Data that is not
    JSON as given (a Mailbox object, a Decimal in metadata...) and SendJob objects go as the
    validated job's dump. Made batch by batch, as it is published: no encoded form of every job
    is held at once.
    """
    wires = [_wire(entry, channel) for entry in entries]
    try:
        return orjson.Fragment(orjson.dumps(wires))
    except TypeError:  # orjson.JSONEncodeError: some job's data is not JSON as given
        pass
    for n, (job_id, _, _, job) in enumerate(entries):
        if job is not None:
            try:
                orjson.dumps(wires[n])
            except TypeError:
                wires[n] = job_wire(job, job_id)
    return orjson.Fragment(fastjson.dumps(wires))


def _wire(entry: Entry, channel: str) -> dict[str, Any]:
    job_id, _, given, job = entry
    if given is not None:
        return {**given, "id": job_id, "channel": channel}
    assert job is not None  # an entry has its data or its job
    return job_wire(job, job_id)
