"""server/event_inbox.py: a step's events reach their queues in order, with one loop wake-up
per burst; a closed loop is an error at the emitting side, as call_soon_threadsafe's is."""

from __future__ import annotations

import asyncio
import threading

import pytest

from server.event_inbox import EventInbox
from server.request import StreamEvent


def event(stream: int, i: int) -> StreamEvent:
    return StreamEvent(text=f"{stream}:{i}", token_ids=[i], request_id=str(stream))


def drained(queue: asyncio.Queue[StreamEvent]) -> list[str]:
    out = []
    while not queue.empty():
        out.append(queue.get_nowait().text)
    return out


def test_one_wake_up_per_burst_and_order_kept() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        wakes = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda *a: (wakes.append(a), real(*a))[1]  # type: ignore
        inbox = EventInbox(loop)
        queues = [asyncio.Queue() for _ in range(8)]
        sinks = [inbox.sink(q) for q in queues]
        for step in range(3):
            for i, sink in enumerate(sinks):  # a step's burst: one event per stream
                sink(event(i, step))
            assert len(wakes) == step + 1
            await asyncio.sleep(0)  # the drain runs
        for i, queue in enumerate(queues):
            assert drained(queue) == [f"{i}:0", f"{i}:1", f"{i}:2"]

    asyncio.run(main())


def test_events_from_another_thread_arrive_whole_and_in_order() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        inbox = EventInbox(loop)
        queues = [asyncio.Queue() for _ in range(16)]
        sinks = [inbox.sink(q) for q in queues]
        steps = 200

        def engine() -> None:  # drains run while it emits: bursts split at random points
            for step in range(steps):
                for i, sink in enumerate(sinks):
                    sink(event(i, step))

        thread = threading.Thread(target=engine)
        thread.start()
        got: list[list[str]] = [[] for _ in queues]
        for i, queue in enumerate(queues):
            while len(got[i]) < steps:
                got[i].append((await asyncio.wait_for(queue.get(), 10)).text)
        thread.join()
        assert got == [[f"{i}:{s}" for s in range(steps)] for i in range(len(queues))]

    asyncio.run(main())


def test_a_closed_loop_raises_at_every_emit() -> None:
    loop = asyncio.new_event_loop()
    inbox = EventInbox(loop)
    sink = inbox.sink(asyncio.Queue())
    loop.close()
    for i in range(2):  # nothing is left waiting for a drain that never comes
        with pytest.raises(RuntimeError, match="closed"):
            sink(event(0, i))
