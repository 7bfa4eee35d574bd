"""The per-process gate: bounded jobs in delivery, urgent ones (single sends) let through first."""

from __future__ import annotations

import asyncio

from worker.consume.gate import Gate


def test_gate_bounds_and_lets_urgent_jobs_pass_waiting_bulk_ones() -> None:
    async def scenario() -> list[str]:
        gate = Gate(2)
        order: list[str] = []
        release = asyncio.Event()

        async def job(name: str, priority: int) -> None:
            await gate.acquire(priority)
            order.append(name)
            await release.wait()
            gate.release()

        tasks = [asyncio.create_task(job(f"bulk{i}", 1)) for i in range(5)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(job("urgent", 0)))
        await asyncio.sleep(0.01)
        assert order == ["bulk0", "bulk1"]  # two places: the rest wait
        assert gate.waiting == 4
        release.set()
        await asyncio.gather(*tasks)
        assert gate.free == 2 and gate.waiting == 0
        return order

    order = asyncio.run(scenario())
    # the urgent job arrived after every bulk job, and passed the three still waiting
    assert order[2] == "urgent"
    assert order[3:] == ["bulk2", "bulk3", "bulk4"]


def test_a_cancelled_waiter_does_not_keep_its_place() -> None:
    async def scenario() -> int:
        gate = Gate(1)
        await gate.acquire()
        waiter = asyncio.create_task(gate.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0)
        gate.release()
        return gate.free

    assert asyncio.run(scenario()) == 1
