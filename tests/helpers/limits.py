"""Driving rate limiters like separate worker processes, and checking the start times they allowed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["max_in_window", "run_limiters"]


def max_in_window(starts: Sequence[float], window: float = 1.0) -> int:
    """Most starts inside any half-open window [t, t + window)."""
    times = sorted(starts)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_limiters(
    limiters: list[Any],
    endpoint: str,
    per_limiter: int,
    *,
    concurrency: int = 16,
    during: Callable[[], None] | None = None,
) -> list[float]:
    """Each limiter in its own thread and event loop (like a worker process): acquire ``per_limiter`` times.

    Returns the start times (monotonic) of every request, all limiters together.
    """
    starts: list[float] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(limiter: Any) -> None:
        async def one(gate: asyncio.Semaphore) -> None:
            async with gate:
                permit = await limiter.acquire(endpoint)
                with lock:
                    starts.append(time.monotonic())
                if permit is not None:
                    permit.sent()

        async def main() -> None:
            gate = asyncio.Semaphore(concurrency)
            await asyncio.gather(*(one(gate) for _ in range(per_limiter)))
            await limiter.aclose()

        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(lim,)) for lim in limiters]
    for t in threads:
        t.start()
    if during is not None:
        during()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return sorted(starts)
