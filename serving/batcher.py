"""An asyncio micro-batcher: requests wait in a bounded queue, a single worker takes up to
`max_batch` of them (under load waiting at most `max_wait_ms` for a batch to fill; an idle
server runs a lone request at once) and runs ONE call of `process` per batch in an executor
thread, so inference never blocks the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class QueueFullError(RuntimeError):
    """The queue holds `max_queue` items already; the caller should retry later."""


class BatcherClosedError(RuntimeError):
    """The batcher was closed (the server is shutting down)."""


@dataclass
class _Pending(Generic[ItemT, ResultT]):
    item: ItemT
    future: asyncio.Future[ResultT]


class MicroBatcher(Generic[ItemT, ResultT]):
    def __init__(
        self,
        process: Callable[[list[ItemT]], Sequence[ResultT]],
        *,
        executor: Executor,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int, float], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_wait_ms >= 0")
        self._process = process
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self._last_batch_size = 0
        self.max_queue = max_queue
        self._on_batch = on_batch  # (batch size, seconds) after each batch, for metrics
        self._on_depth = on_depth  # the queue depth whenever it changes, for metrics
        self._pending: deque[_Pending[ItemT, ResultT]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def close(self) -> None:
        """Stop taking items, finish every queued one, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None

    async def submit(self, item: ItemT) -> ResultT:
        (result,) = await self.submit_many([item])
        return result

    async def submit_many(self, items: Sequence[ItemT]) -> list[ResultT]:
        """Queue all items or none (QueueFullError), then wait for their results."""
        if self._closing or self._worker is None:
            raise BatcherClosedError("the inference queue is not running")
        if len(self._pending) + len(items) > self.max_queue:
            raise QueueFullError(
                f"the inference queue is full ({len(self._pending)}/{self.max_queue} waiting)"
            )
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        self._pending.extend(pending)
        self._report_depth()
        self._wakeup.set()
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            # Wait for company only under load: an idle server answers a lone request at once,
            # and requests that arrive while a batch runs form the next one anyway.
            if len(self._pending) > 1 or self._last_batch_size > 1:
                await self._wait_for_batch_to_fill(loop)
            batch = [
                self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))
            ]
            self._report_depth()
            batch = [p for p in batch if not p.future.done()]  # cancelled by its caller
            self._last_batch_size = len(batch)
            if batch:
                await self._run_batch(loop, batch)

    def _report_depth(self) -> None:
        if self._on_depth is not None:
            self._on_depth(len(self._pending))

    async def _wait_for_batch_to_fill(self, loop: asyncio.AbstractEventLoop) -> None:
        deadline = loop.time() + self.max_wait_s
        while len(self._pending) < self.max_batch and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                async with asyncio.timeout(remaining):
                    await self._wakeup.wait()
            except TimeoutError:
                return

    async def _run_batch(
        self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[ItemT, ResultT]]
    ) -> None:
        started = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._process, [p.item for p in batch]
            )
            if len(results) != len(batch):
                raise RuntimeError(f"process returned {len(results)} results for {len(batch)}")
        except Exception as exc:  # one bad batch fails its requests, never the worker
            logger.exception("inference batch of %d failed", len(batch))
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            if self._on_batch is not None:
                self._on_batch(len(batch), time.perf_counter() - started)
        for p, result in zip(batch, results, strict=True):
            if not p.future.done():
                p.future.set_result(result)
