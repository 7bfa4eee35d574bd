"""Redis calls made in the same event-loop iteration, sent to Redis as one pipeline.

The jobs of a batch are delivered by concurrent coroutines, and each makes the same two calls:
the claim before its SMTP transaction, and the final state right after its 250. redis-py's Python
on each round trip, at thousands of emails per second, is a good part of a core
(docs/performance.md). Here every call made during one loop iteration waits only for the end of
that iteration and leaves with the others in one pipeline: the claims of a whole batch travel
together, and the finishes of the replies read in the same iteration do too. Nothing is delayed
beyond the current iteration, so each write still happens where it did (docs/decisions.md,
"The uncertain window"), and each caller gets its own result or its own error.

Besides scripts, plain commands go the same way (:meth:`AutoPipeline.command`), and writes
nobody waits for (:meth:`AutoPipeline.send`: the end of a group's in-flight entry, the metrics
counts) join whatever else leaves in the next iteration: for a group of one single send, what
were three more round trips of their own ride with its neighbours'.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import structlog
from hiredis import pack_command
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import AskError, NoScriptError, ResponseError

from config.redisconn import AsyncState, ReplicaWait

log = structlog.get_logger("maildispatch.autopipe")


@dataclass
class _Call:
    script: AsyncScript | None  # None: a plain command, its words in args
    keys: Sequence[Any]
    args: Sequence[Any]
    future: asyncio.Future[Any]

    def key(self) -> Any:
        """The key that places the call on a cluster's node (a command's first argument)."""
        return self.keys[0] if self.script is not None else self.args[1]

    def packed(self) -> bytes:
        if self.script is None:
            return bytes(pack_command(tuple(map(_arg, self.args))))
        return bytes(
            pack_command(
                ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *map(_arg, self.args))
            )
        )


class AutoPipeline:
    """Coalesces ``EVALSHA`` calls per event-loop iteration (one instance per process loop)."""

    def __init__(
        self, client: AsyncState, max_calls: int = 2000, wait: ReplicaWait | None = None
    ) -> None:
        self.client = client
        #: on a cluster, each node's pipeline ends with WAIT: its writes are on a replica before
        #: any caller goes on (acks a task, answers a call)
        self.wait = wait
        self.max_calls = max_calls
        self._queue: list[_Call] = []
        self._flushing: set[asyncio.Task[None]] = set()
        self.pipelines = 0  # how many round trips it took (tests and metrics read it)
        self._stale = False  # a cluster node failed: its slots are read again before the next

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered Lua script, in a pipeline with the calls of this loop iteration."""
        return await self._queued(script, keys, args)

    async def command(self, *words: Any) -> Any:
        """Run a plain command, in a pipeline with the calls of this loop iteration."""
        return await self._queued(None, (), words)

    def send(self, *words: Any) -> None:
        """Queue a plain command nobody waits for (best effort: an error is logged, not raised)."""
        self._queued(None, (), words).add_done_callback(_log_failure)

    def send_script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> None:
        """Queue a script call nobody waits for (best effort, as :meth:`send`)."""
        self._queued(script, keys, args).add_done_callback(_log_failure)

    def _queued(
        self, script: AsyncScript | None, keys: Sequence[Any], args: Sequence[Any]
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(_Call(script, keys, args, future))
        if len(self._queue) == 1:
            # callbacks scheduled now run in the next iteration, after every coroutine made
            # ready in this one has had its turn (and added its call)
            loop.call_soon(self._flush)
        elif len(self._queue) >= self.max_calls:
            self._flush()
        return future

    async def drain(self) -> None:
        """Send what is queued and wait for every pipeline under way (at shutdown)."""
        self._flush()
        while self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)

    def _flush(self) -> None:
        calls, self._queue = self._queue, []
        if not calls:
            return
        task = asyncio.ensure_future(self._send(calls))
        self._flushing.add(task)  # keep a reference until it is done
        task.add_done_callback(self._flushing.discard)

    async def _send(self, calls: list[_Call]) -> None:
        try:
            results = await self._pipeline(calls)
            missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
            if missing:  # Redis restarted or its script cache was flushed: load, then redo
                scripts = {id(calls[i].script): calls[i].script for i in missing}
                for script in scripts.values():
                    if script is not None:
                        script.sha = await self.client.script_load(script.script)
                again = await self._pipeline([calls[i] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except asyncio.CancelledError:
            for call in calls:
                call.future.cancel()
            raise
        except Exception as exc:  # Redis unreachable: every caller of this pipeline gets it
            for call in calls:
                if not call.future.done():
                    call.future.set_exception(exc)
            return
        for call, result in zip(calls, results, strict=True):
            if call.future.done():  # its caller was cancelled meanwhile
                continue
            if isinstance(result, Exception):
                call.future.set_exception(result)
            else:
                call.future.set_result(result)

    async def _pipeline(self, calls: Sequence[_Call]) -> list[Any]:
        """Every call as one write on one pooled connection, then each reply in order.

        redis-py's own pipeline packs arguments in Python, one by one (a claim or a finish has a
        dozen) and runs each reply through its callbacks; here hiredis packs them and the
        replies are read as they are. Errors of single calls come back in place. On a Redis
        Cluster the calls go to the node holding each one's first key, one pipeline per node.
        """
        self.pipelines += 1
        client = self.client
        if not isinstance(client, AsyncRedisCluster):
            pool = client.connection_pool
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                return await _exchange(conn, calls)
            finally:
                await pool.release(conn)
        return await self._cluster_pipeline(cast(AsyncRedisCluster, client), calls)

    def _wait_on(self, client: AsyncRedisCluster, call: _Call) -> ReplicaWait | None:
        return self.wait.on(client, call.key()) if self.wait is not None else None

    async def _cluster_pipeline(
        self, client: AsyncRedisCluster, calls: Sequence[_Call]
    ) -> list[Any]:
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            await client.initialize()  # the slots' nodes, read on first use
            if attempt or self._stale:  # a node moved or went away: read the slots again
                self._stale = False
                await client.nodes_manager.initialize()
            by_node: dict[str, tuple[Any, list[int]]] = {}
            for i in todo:
                node = client.get_node_from_key(calls[i].key())
                assert node is not None
                by_node.setdefault(node.name, (node, []))[1].append(i)
            replies = await asyncio.gather(
                *(
                    _on_node(node, [calls[i] for i in idx], self._wait_on(client, calls[idx[0]]))
                    for node, idx in by_node.values()
                ),
                return_exceptions=True,
            )
            moved: list[int] = []
            for (_, idx), reply in zip(by_node.values(), replies, strict=True):
                if isinstance(reply, BaseException):
                    self._stale = True  # failover under way: the callers retry
                    for i in idx:
                        results[i] = reply
                    continue
                for i, result in zip(idx, reply, strict=True):
                    results[i] = result
                    if isinstance(result, AskError):  # MOVED too: a slot changed hands
                        moved.append(i)
            if not moved:
                break
            todo = moved
        return results


async def _exchange(
    conn: Any, calls: Sequence[_Call], wait: ReplicaWait | None = None
) -> list[Any]:
    try:
        packed = b"".join(c.packed() for c in calls)
        if wait is not None:
            packed += wait.packed()
        await conn.send_packed_command(packed, check_health=False)
        results: list[Any] = []
        for _ in calls:
            try:
                results.append(await conn.read_response())
            except ResponseError as exc:
                results.append(exc)
        if wait is not None:
            wait.check(await conn.read_response())
        return results
    except BaseException:
        await conn.disconnect()  # half-read replies must not reach the next user
        raise


async def _on_node(node: Any, calls: Sequence[_Call], wait: ReplicaWait | None) -> list[Any]:
    conn = node.acquire_connection()
    try:
        await node.disconnect_if_needed(conn)
        return await _exchange(conn, calls, wait)
    finally:
        node.release(conn)


def _log_failure(future: asyncio.Future[Any]) -> None:
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        log.warning("redis_write_failed", error=type(exc).__name__)


def _arg(value: Any) -> Any:
    # numbers as redis-py writes them (repr), so stored values do not depend on the packer
    return repr(value) if isinstance(value, float) else value
