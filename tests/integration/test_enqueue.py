"""Enqueueing against real Redis: batches, idempotency, and nothing enqueued from bad input."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from config import keys
from config.settings import Settings
from producers.client import Dispatcher, IdempotencyInProgress, InvalidJobs
from producers.job import InvalidJob, Mailbox, SendJob, parse_job
from tests.support.env import SECRET
from tests.support.queue import depth, raw_messages, task_body
from tests.support.redis_server import RedisServer
from tests.support.services import wait_for


@pytest.fixture
def dispatcher(redis_url: str, redis_client: redis.Redis) -> Dispatcher:
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET, batch_size=50))  # type: ignore[arg-type]
    yield d  # type: ignore[misc]
    d.close()


def job(i: int, **overrides: object) -> dict[str, object]:
    return {
        "owner": f"owner-{i % 3}",
        "identity": "Shop <shop@example.com>",
        "to": [f"user{i}@example.org"],
        "subject": f"Order {i}",
        "text": "Thanks",
    } | overrides


def queued_jobs(client: redis.Redis, queue: str = "mail.msc") -> list[list[dict[str, object]]]:
    """The batches waiting on a queue (kombu's Redis list), decoded."""
    return [task_body(raw)[0][0] for raw in raw_messages(client, queue)]


def test_send_many_publishes_full_batches(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    ids = dispatcher.send_many([job(i, channel="msc") for i in range(120)])
    batches = queued_jobs(redis_client)
    assert sorted(len(b) for b in batches) == [20, 50, 50]
    assert {j["id"] for b in batches for j in b} == {str(i) for i in ids}
    state = dispatcher.status(ids[0])
    assert state is not None and state["state"] == "queued" and state["owner"] == "owner-0"
    # the task body is JSON text inside kombu's envelope, not base64 (a third smaller)
    envelope = json.loads(raw_messages(redis_client, "mail.msc")[0])
    assert envelope["properties"]["body_encoding"] is None and envelope["body"].startswith("[[[{")


def test_progress_counts_only_jobs_already_on_the_queue(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    seen: list[tuple[int, int]] = []  # (jobs reported so far, jobs on the queue then)
    reported = 0

    def progress(n: int) -> None:
        nonlocal reported
        reported += n
        seen.append((reported, sum(len(b) for b in queued_jobs(redis_client))))

    dispatcher.send_many([job(i, channel="msc") for i in range(1030)], progress=progress)
    assert reported == 1030 and len(seen) > 1  # 21 batches of 50: reported as they are written
    assert all(on_queue >= so_far for so_far, on_queue in seen), seen


def test_queued_jobs_validate_into_the_jobs_accepted(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    given = [
        job(0, cc=["Carol <CAROL@Example.NET>"], metadata={"order": 7}),  # JSON as given
        job(1, identity=Mailbox(name="Shop", address="shop@example.com")),  # a model object
        job(2, subject=b"Order 2", send_at=datetime(2026, 1, 1, tzinfo=UTC)),  # bytes: not JSON
        SendJob.model_validate(job(3, channel="msc")),
    ]
    expected = [dispatcher.validate(g) for g in given]
    ids = dispatcher.send_many(given)
    (batch,) = queued_jobs(redis_client)
    assert [j["id"] for j in batch] == [str(i) for i in ids]
    assert batch[0]["cc"] == ["Carol <CAROL@Example.NET>"]  # a dict goes as it was given
    # what the worker reads back is the job this producer accepted, whatever form it came in
    for wire, want, job_id in zip(batch, expected, ids, strict=True):
        got = SendJob.model_validate(wire)
        assert got.id == job_id and got.channel == "msc"
        assert got.model_dump(exclude={"id", "channel"}) == want.model_dump(
            exclude={"id", "channel"}
        )


def test_send_is_a_batch_of_one_published_at_once(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    job_id = dispatcher.send(job(1))
    (batch,) = queued_jobs(redis_client)
    assert [j["id"] for j in batch] == [str(job_id)]
    assert batch[0]["channel"] == "msc"  # no channel named: the owner's preference, msc by default


def test_many_dispatchers_of_one_process_send_while_none_is_closed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # an app that makes a Dispatcher per request and never closes them: every one still sends
    # (kombu's connection pools are shared by every app of the process with the same broker,
    # ten connections; a dispatcher that kept one of them for good emptied them after ten)
    settings = Settings(broker_url=redis_url, secret_key=SECRET)  # type: ignore[arg-type]
    made: list[Dispatcher] = []
    sent: list[object] = []

    def send_from_many() -> None:
        for i in range(14):
            made.append(Dispatcher(settings))
            sent.append(made[-1].send(job(i)))

    worker = threading.Thread(target=send_from_many, daemon=True)
    worker.start()
    worker.join(60)
    try:
        assert len(sent) == 14, f"{len(sent)} of 14 sends returned within a minute"
        assert len(queued_jobs(redis_client)) == 14
    finally:
        if not worker.is_alive():
            for d in made:
                d.close()


def test_task_message_shows_no_content(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    dispatcher.send(job(1, subject="Secret subject", text="Secret body"))
    envelope = json.loads(raw_messages(redis_client, "mail.msc")[0])
    headers = envelope["headers"]
    assert headers["task"] == "maildispatch.deliver.msc"
    shown = headers["argsrepr"] + headers["kwargsrepr"]
    assert "count=1" in shown and "channel=msc" in shown
    assert "user1@example.org" not in shown and "Secret" not in shown


def test_invalid_jobs_enqueue_nothing(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    jobs = [job(i) for i in range(10)]
    jobs[3] = job(3, subject="x\r\nBcc: a@b.c")
    jobs[7] = job(7, to=["nope"])
    with pytest.raises(InvalidJobs) as info:
        dispatcher.send_many(jobs)
    assert [e.index for e in info.value.errors] == [3, 7]
    assert depth(redis_client, "mail.msc") == 0
    assert redis_client.keys("md:*:job:*") == []


def test_a_job_that_cannot_be_encoded_enqueues_nothing_of_its_batch(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # the 120th job's body holds a lone surrogate: refused at validation, not once the first
    # batches are already on the queue
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET, batch_size=50))  # type: ignore[arg-type]
    given = [job(i) for i in range(150)]
    given[119]["text"] = "caf\udce9"
    try:
        with pytest.raises(InvalidJobs) as refused:
            d.send_many(given)
    finally:
        d.close()
    assert [(e.index, e.errors[0].field) for e in refused.value.errors] == [(119, "text")]
    assert depth(redis_client, "mail.msc") == 0


def test_a_sendjob_made_without_validation_is_validated_again(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # a template job copied per send: pydantic's model_copy(update=...) does not validate, and
    # the worker would drop the job as invalid after the call accepted it
    template = parse_job(job(1))
    with pytest.raises(InvalidJob, match="subject"):
        dispatcher.send(template.model_copy(update={"subject": "Hi\r\nBcc: x@example.com"}))
    assert depth(redis_client, "mail.msc") == 0
    copy = template.model_copy(update={"subject": "Hi again"})
    assert dispatcher.send(copy) == template.id
    assert [j["subject"] for [j] in queued_jobs(redis_client)] == ["Hi again"]


def test_idempotency_key_makes_one_job(dispatcher: Dispatcher, redis_client: redis.Redis) -> None:
    first = dispatcher.send(job(1, idempotency_key="order-1"))
    second = dispatcher.send(job(1, idempotency_key="order-1"))
    other_owner = dispatcher.send(job(2, idempotency_key="order-1"))
    assert first == second != other_owner
    assert depth(redis_client, "mail.msc") == 2


def test_oversize_job_is_refused(redis_url: str, redis_client: redis.Redis) -> None:
    d = Dispatcher(Settings(broker_url=redis_url, secret_key=SECRET, max_message_bytes=10_000))  # type: ignore[arg-type]
    with pytest.raises(InvalidJobs, match="larger than"):
        d.send_many([job(1, text="x" * 20_000)])
    with pytest.raises(InvalidJob, match="text: message larger than 10000 bytes"):
        d.send(job(1, text="x" * 20_000))  # one job: its own error, not a list
    d.close()
    assert depth(redis_client, "mail.msc") == 0


def test_size_and_recipient_limits_count_bytes_and_distinct_recipients(redis_url: str) -> None:
    d = Dispatcher(
        Settings(
            broker_url=redis_url, secret_key=SECRET, max_message_bytes=10_000, max_recipients=3
        )  # type: ignore[arg-type]
    )
    try:
        d.validate(job(1, text="é" * 3_900))  # 3,900 characters, 7,800 bytes: fits
        with pytest.raises(InvalidJob, match="larger than"):
            d.validate(job(1, text="é" * 4_500))  # 4,500 characters but 9,000 bytes + headers
        same = ["a@example.org", "a@EXAMPLE.org"]  # one recipient: domains are case-folded
        d.validate(job(1, to=same, cc=["a@example.org"], bcc=["b@example.org"]))
        with pytest.raises(InvalidJob, match="more than 3 recipients"):
            d.validate(
                job(1, to=same, cc=["c@example.org", "d@example.org"], bcc=["b@example.org"])
            )
    finally:
        d.close()


def test_dispatcher_refuses_to_start_without_secret(redis_url: str) -> None:
    from config.settings import ConfigurationError

    with pytest.raises(ConfigurationError):
        Dispatcher(Settings(broker_url=redis_url, secret_key=None))


def test_a_bad_job_after_the_first_thousand_leaves_nothing_behind(
    dispatcher: Dispatcher, redis_client: redis.Redis
) -> None:
    # states are recorded chunk by chunk while the rest is validated: all undone on a bad job
    jobs = [job(i, idempotency_key=f"k{i}") for i in range(2500)]
    jobs[2200] = job(2200, to=["nope"])
    with pytest.raises(InvalidJobs) as info:
        dispatcher.send_many(jobs)
    assert [e.index for e in info.value.errors] == [2200]
    assert depth(redis_client, "mail.msc") == 0
    assert redis_client.keys("md:*:job:*") == [] and redis_client.keys("md:*:idem:*") == []
    # and the same jobs, corrected, are accepted: their idempotency keys were released
    jobs[2200] = job(2200)
    assert len(set(dispatcher.send_many(jobs))) == 2500


@contextlib.contextmanager
def black_hole_broker() -> Iterator[str]:
    """A "broker" that accepts connections and never answers, until it closes them all."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                held.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        listener.close()
        for conn in held:
            conn.close()


def test_a_concurrent_call_never_answers_with_a_job_that_was_not_published(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # the first call claims the key, then hangs publishing (a broker that does not answer) and
    # finally fails: a second call with the same key must not answer with the first job's id
    config = {"redis_url": redis_url, "secret_key": SECRET, "idempotency_wait": 0.3}
    second = Dispatcher(Settings(broker_url=redis_url, **config))  # type: ignore[arg-type]
    key = keys.idempotency("owner-1", "order-9")
    failed: list[BaseException] = []
    with black_hole_broker() as dead:
        first = Dispatcher(Settings(broker_url=dead, **config))  # type: ignore[arg-type]

        def call() -> None:
            try:
                first.send(job(1, idempotency_key="order-9"))
            except Exception as exc:
                failed.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        wait_for(lambda: (redis_client.get(key) or b"").startswith(b"p:"), 20, 0.01, "claimed")
        pending = redis_client.get(key)
        with pytest.raises(IdempotencyInProgress, match="order-9"):
            second.send(job(1, idempotency_key="order-9"))  # waits 0.3 s, then gives up
        assert redis_client.get(key) == pending and depth(redis_client, "mail.msc") == 0
        # a more patient call waits, and takes the key over once the first call released it
        patient = Dispatcher(Settings(broker_url=redis_url, **config | {"idempotency_wait": 30}))  # type: ignore[arg-type]
        got: list[object] = []
        waiter = threading.Thread(
            target=lambda: got.append(patient.send(job(1, idempotency_key="order-9")))
        )
        waiter.start()
    thread.join(60)  # the broker went away: the first call fails and releases its key
    waiter.join(60)
    assert failed and len(got) == 1
    (job_id,) = got
    assert f"p:{job_id}".encode() != pending
    assert redis_client.get(key) == str(job_id).encode()  # published: confirmed
    assert second.status(job_id)["state"] == "queued"  # type: ignore[arg-type,index]
    assert [j["id"] for b in queued_jobs(redis_client) for j in b] == [str(job_id)]
    assert second.send(job(1, idempotency_key="order-9")) == job_id  # a retry: the same job
    for d in (first, second, patient):
        d.close()


def test_no_enqueue_script_holds_redis_for_long(tmp_path: Path) -> None:
    # every other client of the fleet waits while a script runs: a call of 2,000 jobs is
    # recorded by scripts of at most 64 jobs (~1 ms each), not one of 1,000 (~14 ms)
    server = RedisServer(tmp_path / "redis").start()
    client = redis.Redis.from_url(server.url)
    try:
        client.config_set("slowlog-log-slower-than", 0)  # every command, with its arguments
        client.config_set("slowlog-max-len", 10_000)
        client.slowlog_reset()
        d = Dispatcher(Settings(broker_url=server.url, secret_key=SECRET))  # type: ignore[arg-type]
        try:
            ids = d.send_many([job(i) for i in range(2000)])
        finally:
            d.close()
        assert len(ids) == 2000 and len(client.keys("md:*:job:*")) == 2000
        conn = client.connection_pool.get_connection()
        try:
            conn.send_command("SLOWLOG", "GET", "10000")
            entries = conn.read_response()
        finally:
            client.connection_pool.release(conn)
        # an entry's arguments: the script's text cut short, then the number of keys, the keys
        recorded = [
            int(args[2])
            for _, _, _, args, *_ in entries
            if args[0].upper() == b"EVAL" and b"md:" in args[3] and b":job:" in args[3]
        ]
        assert sum(recorded) == 2000 and max(recorded) <= 64
    finally:
        client.close()
        server.stop()


def test_a_cancel_while_a_scheduled_send_is_enqueued_stays_cancelled(
    dispatcher: Dispatcher, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a producer that chose the job's id; another process cancels that id between the job's
    # record (queued) and its place in the schedule: told `cancelled`, it must stay so
    import producers.client as client_module

    job_id = str(uuid.uuid4())
    answers: list[object] = []
    park = client_module.park

    def park_after_a_cancel(*args: Any, **kwargs: Any) -> None:
        answers.append(dispatcher.cancel(job_id))
        park(*args, **kwargs)

    monkeypatch.setattr(client_module, "park", park_after_a_cancel)
    due = datetime.now(UTC) + timedelta(minutes=5)
    others = [job(i, send_at=due.isoformat()) for i in range(3)]
    ids = dispatcher.send_many([job(9, id=job_id, send_at=due.isoformat()), *others])
    assert answers == ["cancelled"]
    assert redis_client.hget(keys.job(job_id), "state") == b"cancelled"
    assert redis_client.zscore(keys.schedule_of(job_id), job_id) is None
    for other in map(str, ids[1:]):  # the rest of the call is parked as before
        assert redis_client.hget(keys.job(other), "state") == b"scheduled"
        assert redis_client.zscore(keys.schedule_of(other), other) == pytest.approx(due.timestamp())
        assert redis_client.get(keys.payload(other)) is not None
