"""The in-process limiter: window arithmetic with a fake clock, one short real-time run, the registry."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time

import pytest

from airflow_provider_attentive.client.ratelimit.base import RateLimiter, window_shape
from airflow_provider_attentive.client.ratelimit.local import (
    LimiterRegistry,
    LocalRateLimiter,
    SlidingWindowLimiter,
    key_fingerprint,
)
from tests.helpers.limits import max_in_window


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run_sequential(limiter: SlidingWindowLimiter, clock: FakeClock, n: int) -> list[float]:
    """Each caller reserves, then sleeps until its slot (the clock jumps there)."""
    starts = []
    for _ in range(n):
        delay = limiter.reserve()
        assert delay >= 0
        clock.now += delay
        starts.append(clock.now)
    return starts


def run_burst(limiter: SlidingWindowLimiter, clock: FakeClock, n: int) -> list[float]:
    """All callers reserve at the same instant (many tasks arriving at once)."""
    return [clock.now + limiter.reserve() for _ in range(n)]


@pytest.mark.parametrize("runner", [run_sequential, run_burst])
@pytest.mark.parametrize("rate", [150, 10, 5])
def test_never_more_than_rate_in_any_second_and_keeps_throughput(runner, rate: int) -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(rate, clock=clock)
    n = rate * 20
    starts = runner(limiter, clock, n)
    assert max_in_window(starts) <= rate
    # Even with the safety margin nothing is lost beyond a few percent: n requests fit in about
    # n / rate seconds.
    achieved = (n - 1) / (max(starts) - min(starts))
    assert 0.95 * rate <= achieved <= rate


def test_margin_keeps_windows_apart_by_more_than_a_second() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, margin_s=0.02, clock=clock)
    starts = run_burst(limiter, clock, 30)
    for i in range(10, 30):
        assert starts[i] - starts[i - 10] >= 1.02 - 1e-9


def test_smoothing_spreads_a_burst() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(100, smoothing=0.5, clock=clock)
    starts = run_burst(limiter, clock, 10)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) == pytest.approx(0.005)
    no_smoothing = SlidingWindowLimiter(100, smoothing=0.0, clock=clock)
    assert run_burst(no_smoothing, clock, 10) == [clock.now] * 10


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(150, (150, 1.0)), (2.5, (2, 1.0)), (1.0, (1, 1.0)), (0.5, (1, 2.0)), (0.25, (1, 4.0))],
)
def test_window_shape(rate: float, expected: tuple[int, float]) -> None:
    assert window_shape(rate) == expected


@pytest.mark.parametrize("rate", [0, -1, float("inf"), float("nan")])
def test_window_shape_rejects_nonsense(rate: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        SlidingWindowLimiter(rate)


def test_fractional_rate_above_one_never_exceeds_it_in_a_second() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2.5, clock=clock)
    starts = run_sequential(limiter, clock, 40)
    assert max_in_window(starts) <= 2  # 3 starts in one second would exceed 2.5
    assert (len(starts) - 1) / (max(starts) - min(starts)) >= 0.95 * 2


def test_fractional_rate_below_one_spaces_requests() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(0.5, clock=clock)
    starts = run_sequential(limiter, clock, 5)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g >= 2.0 for g in gaps)
    assert all(g < 2.1 for g in gaps)


def test_note_remaining_zero_holds_the_next_start_back_one_slot() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, smoothing=0, clock=clock)
    assert limiter.reserve() == 0
    limiter.note_remaining(3, 10)
    assert limiter.reserve() == 0
    limiter.note_remaining(0, 10)
    assert limiter.reserve() == pytest.approx(0.1)


def test_note_remaining_warns_when_attentive_has_a_lower_limit(caplog: pytest.LogCaptureFixture) -> None:
    limiter = SlidingWindowLimiter(150)
    limiter.note_remaining(5, 10)
    limiter.note_remaining(4, 10)
    warnings = [r for r in caplog.records if "limit of 10" in r.getMessage()]
    assert len(warnings) == 1


def test_retry_after_pauses_the_endpoint_but_a_bare_429_does_not() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(150, clock=clock)
    limiter.note_throttled(None)
    assert limiter.reserve() == 0
    limiter.note_throttled(1.5)
    assert limiter.reserve() == pytest.approx(1.5)


def test_each_429_widens_the_margin_up_to_a_cap() -> None:
    limiter = SlidingWindowLimiter(10, margin_s=0.02)
    margins = []
    for _ in range(6):
        limiter.note_throttled(None)
        margins.append(round(limiter.margin_s, 3))
    assert margins == [0.03, 0.04, 0.05, 0.05, 0.05, 0.05]
    assert limiter.period_s == pytest.approx(1.05)
    # The cap keeps throughput at 95% of the limit or more.
    assert limiter.capacity / limiter.period_s >= 0.95 * 10


def test_lower_rate_keeps_history() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, smoothing=0, clock=clock)
    run_burst(limiter, clock, 10)
    limiter.lower_rate(5)
    assert limiter.capacity == 5
    assert limiter.reserve() == pytest.approx(1.02)
    limiter.lower_rate(50)  # never raises the rate
    assert limiter.rate == 5


def test_start_is_rechecked_against_when_requests_really_went_out() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(2, smoothing=0, clock=clock)
    t0 = clock.now
    a_delay, a = limiter._plan(started=False)
    b_delay, b = limiter._plan(started=False)
    c_delay, c = limiter._plan(started=False)
    assert (a_delay, b_delay, c_delay) == (0, 0, pytest.approx(1.02))
    assert limiter._try_start(a) == 0
    clock.now = t0 + 0.1
    limiter._mark(a)  # A's bytes left only 100 ms after its slot (a slow connect, say)
    clock.now = t0 + 0.5
    assert limiter._try_start(b) == 0
    # C wakes at its planned slot, but A really went out at +0.1, so C has to wait until +1.12.
    clock.now = t0 + 1.02
    assert limiter._try_start(c) == pytest.approx(0.1)
    clock.now = t0 + 1.12
    assert limiter._try_start(c) == 0


def test_late_wakeups_cannot_squeeze_a_window() -> None:
    """Plans made long ahead; wake-ups arrive late and bunched. Starts still respect the window."""
    clock = FakeClock()
    limiter = SlidingWindowLimiter(10, clock=clock)
    planned = [limiter._plan(started=False) for _ in range(60)]
    starts = []
    rng = random.Random(5)
    pending = [(clock.now + delay, entry) for delay, entry in planned]
    while pending:
        pending.sort(key=lambda p: p[0])
        wake, entry = pending.pop(0)
        clock.now = max(clock.now, wake + rng.choice([0, 0, 0, 0.05, 0.3]))  # some wake-ups are late
        delay = limiter._try_start(entry)
        if delay > 0:
            pending.append((clock.now + delay, entry))
        else:
            starts.append(clock.now)
    assert len(starts) == 60
    assert max_in_window(starts) <= 10


def test_a_cancelled_acquire_frees_its_booking() -> None:
    limiter = SlidingWindowLimiter(1)

    async def main() -> None:
        await limiter.acquire()  # starts now
        waiting = asyncio.ensure_future(limiter.acquire())  # would wait about a second
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(main())
    assert len(limiter._log) == 1


def test_reservations_from_many_threads_respect_the_window() -> None:
    clock = FakeClock()
    limiter = SlidingWindowLimiter(50, clock=clock)
    starts: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            slot = clock.now + limiter.reserve()
            with lock:
                starts.append(slot)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(starts) == 800
    assert len(set(starts)) == 800
    assert max_in_window(starts) <= 50


def test_async_acquire_in_real_time() -> None:
    limiter = SlidingWindowLimiter(40)
    starts: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        starts.append(time.monotonic())

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(100)))

    began = time.monotonic()
    asyncio.run(main())
    assert max_in_window(starts) <= 40
    assert time.monotonic() - began < 2.6  # 100 starts at 40/s: two full windows after the first


def test_registry_shares_windows_per_url_and_key_without_storing_the_key() -> None:
    registry = LimiterRegistry()
    rates = {"attributes": 150.0, "subscribe": 10.0}
    a = registry.limiter_for("https://api.example", "key-one", rates)
    b = registry.limiter_for("https://api.example", "key-one", rates)
    other_key = registry.limiter_for("https://api.example", "key-two", rates)
    other_url = registry.limiter_for("https://other.example", "key-one", rates)
    assert isinstance(a, RateLimiter)
    assert a.limiter("attributes") is b.limiter("attributes")
    assert a.limiter("subscribe") is not a.limiter("attributes")
    assert a.limiter("attributes") is not other_key.limiter("attributes")
    assert a.limiter("attributes") is not other_url.limiter("attributes")
    stored = repr(list(registry._windows.keys()))
    assert "key-one" not in stored
    assert key_fingerprint("key-one") in stored


def test_registry_uses_the_lowest_rate_asked_for() -> None:
    registry = LimiterRegistry()
    a = registry.limiter_for("https://api.example", "k", {"subscribe": 10.0})
    registry.limiter_for("https://api.example", "k", {"subscribe": 4.0})
    assert a.limiter("subscribe").rate == 4.0


def test_registry_forgets_windows_nobody_uses() -> None:
    registry = LimiterRegistry()
    limiter: LocalRateLimiter | None = registry.limiter_for("https://api.example", "k", {"me": 150.0})
    assert len(registry._windows) == 1
    del limiter
    assert len(registry._windows) == 0
