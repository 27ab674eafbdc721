"""MicroBatcher: batching, bounds, failures and shutdown, on a real event loop and thread pool."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batcher import BatcherClosedError, MicroBatcher, QueueFullError


class Recorder:
    """A `process` that doubles its inputs and records each batch and the thread it ran on."""

    def __init__(self, gate: threading.Event | None = None, fail_on: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[int] = set()
        self.gate = gate
        self.fail_on = fail_on
        self.entered = threading.Event()  # set once a batch is being processed

    def __call__(self, items: list[int]) -> list[int]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        self.threads.add(threading.get_ident())
        self.batches.append(list(items))
        if self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [2 * i for i in items]


def run(coro):
    return asyncio.run(coro)


def make(process, **kwargs) -> tuple[MicroBatcher, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=1)
    options = {"max_batch": 4, "max_wait_ms": 50, "max_queue": 32} | kwargs
    return MicroBatcher(process, executor=executor, **options), executor


def test_concurrent_requests_share_batches_of_at_most_max_batch():
    recorder = Recorder()

    async def scenario():
        batcher, executor = make(recorder)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.close()
        executor.shutdown()
        return results

    assert run(scenario()) == [2 * i for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert sorted(i for b in recorder.batches for i in b) == list(range(10))


def test_process_runs_off_the_event_loop_thread():
    recorder = Recorder()

    async def scenario():
        batcher, executor = make(recorder, max_wait_ms=0)
        batcher.start()
        assert await batcher.submit(3) == 6
        await batcher.close()
        executor.shutdown()
        return threading.get_ident()

    loop_thread = run(scenario())
    assert recorder.threads and loop_thread not in recorder.threads


def submit_one_by_one(recorder: Recorder, items: list[int], **options) -> list[int]:
    """Each item submitted once the previous one is answered (an idle server), 10 s at most."""

    async def scenario():
        batcher, executor = make(recorder, **options)
        batcher.start()
        results = [await asyncio.wait_for(batcher.submit(i), timeout=10) for i in items]
        await batcher.close()
        executor.shutdown()
        return results

    return run(scenario())


def test_a_lone_request_is_not_held_for_a_full_batch():
    recorder = Recorder()
    assert submit_one_by_one(recorder, [1], max_batch=64, max_wait_ms=20) == [2]
    assert recorder.batches == [[1]]


def test_an_idle_batcher_does_not_wait_max_wait_for_company():
    recorder = Recorder()
    # max_wait far beyond the timeout: only the idle fast path can answer in time
    assert submit_one_by_one(recorder, [1, 2], max_batch=4, max_wait_ms=60_000) == [2, 4]
    assert recorder.batches == [[1], [2]]


def test_queue_depth_is_reported_whenever_it_changes():
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    depths: list[int] = []

    async def scenario():
        batcher, executor = make(recorder, max_batch=1, max_wait_ms=0, on_depth=depths.append)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        while not recorder.entered.is_set():  # item 0 left the queue and waits at the gate
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 4)]
        await asyncio.sleep(0)
        gate.set()
        await asyncio.gather(first, *queued)
        await batcher.close()
        executor.shutdown()

    run(scenario())
    assert depths == [1, 0, 1, 2, 3, 2, 1, 0]


def test_full_queue_refuses_instead_of_growing():
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def scenario():
        batcher, executor = make(recorder, max_batch=1, max_wait_ms=0, max_queue=3)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))
        while not recorder.entered.is_set():  # the worker holds item 0 at the gate
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 4)]
        await asyncio.sleep(0)
        assert batcher.queue_depth == 3
        with pytest.raises(QueueFullError, match="full"):
            await batcher.submit(99)
        with pytest.raises(QueueFullError):
            await batcher.submit_many([100])
        assert batcher.queue_depth == 3
        gate.set()
        results = await asyncio.gather(first, *queued)
        await batcher.close()
        executor.shutdown()
        return results

    assert run(scenario()) == [0, 2, 4, 6]
    assert 99 not in {i for b in recorder.batches for i in b}


def test_submit_many_is_all_or_nothing():
    async def scenario():
        batcher, executor = make(Recorder(), max_queue=3)
        batcher.start()
        with pytest.raises(QueueFullError):
            await batcher.submit_many([1, 2, 3, 4])
        assert batcher.queue_depth == 0
        results = await batcher.submit_many([1, 2, 3])
        await batcher.close()
        executor.shutdown()
        return results

    assert run(scenario()) == [2, 4, 6]


def test_a_failing_batch_fails_its_requests_and_the_worker_goes_on():
    recorder = Recorder(fail_on=13)

    async def scenario():
        batcher, executor = make(recorder, max_batch=1, max_wait_ms=0)
        batcher.start()
        with pytest.raises(ValueError, match="bad item 13"):
            await batcher.submit(13)
        result = await batcher.submit(5)
        await batcher.close()
        executor.shutdown()
        return result

    assert run(scenario()) == 10


def test_close_finishes_queued_items_then_refuses_new_ones():
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def scenario():
        batcher, executor = make(recorder, max_batch=2, max_wait_ms=0)
        batcher.start()
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        while not recorder.entered.is_set():
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0)
        with pytest.raises(BatcherClosedError):
            await batcher.submit(7)
        gate.set()
        await closing
        executor.shutdown()
        return await asyncio.gather(*pending)

    assert run(scenario()) == [0, 2, 4, 6, 8]


def test_a_cancelled_request_is_skipped():
    gate = threading.Event()
    recorder = Recorder(gate=gate)

    async def scenario():
        batcher, executor = make(recorder, max_batch=1, max_wait_ms=0)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(1))
        while not recorder.entered.is_set():  # the worker holds item 1 at the gate
            await asyncio.sleep(0.01)
        abandoned = asyncio.ensure_future(batcher.submit(2))
        kept = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0)
        abandoned.cancel()
        gate.set()
        results = await asyncio.gather(first, kept)
        await batcher.close()
        executor.shutdown()
        return results

    assert run(scenario()) == [2, 6]
    assert [2] not in recorder.batches


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), executor=None, max_batch=0, max_wait_ms=1, max_queue=1)
