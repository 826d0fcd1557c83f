"""Rate limits and quotas: exact under concurrency, persisted across restarts, with retry-after."""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from llmbasedos.gateway.policy.limits import DAY_SECONDS, Limiter, TokenReservation
from llmbasedos.protocol.errors import QuotaExceeded, RateLimited, RPCError


@pytest.fixture
def db() -> Path:
    return Path(tempfile.mkdtemp(dir="/tmp")) / "gateway.db"


def outcome(fn: Callable[[], None]) -> str:
    try:
        fn()
    except RateLimited:
        return "rate"
    except QuotaExceeded:
        return "quota"
    return "ok"


async def test_rate_limit_is_exact_under_many_tasks(db: Path) -> None:
    limiter = Limiter(db)
    start = asyncio.Event()

    async def one() -> str:
        await start.wait()
        await asyncio.sleep(0)
        return outcome(lambda: limiter.admit("c1", 50, 3600, None))

    tasks = [asyncio.create_task(one()) for _ in range(300)]
    start.set()
    results = await asyncio.gather(*tasks)
    assert results.count("ok") == 50 and results.count("rate") == 250
    limiter.close()


def test_rate_and_quota_are_exact_under_threads(db: Path) -> None:
    limiter = Limiter(db)
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        mine = [outcome(lambda: limiter.admit("c1", 123, 3600, None)) for _ in range(60)]
        mine += [outcome(lambda: limiter.admit("c2", None, 60, 77)) for _ in range(60)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 123 + 77
    assert results.count("rate") == 480 - 123 and results.count("quota") == 480 - 77
    limiter.close()


def test_refusals_carry_retry_after_and_do_not_count(db: Path) -> None:
    limiter = Limiter(db)
    for _ in range(3):
        limiter.admit("c", 3, 100, 5)
    with pytest.raises(RateLimited) as rate:
        limiter.admit("c", 3, 100, 5)
    assert 0 < rate.value.data["retry_after"] <= 100 and rate.value.data["limit"] == 3
    assert limiter.remaining("c", 3, 100, 5, None).requests_today == 2  # the refusal was not counted
    with pytest.raises(QuotaExceeded) as quota:
        for _ in range(10):
            limiter.admit("c", None, 100, 5)
    assert 0 < quota.value.data["retry_after"] <= DAY_SECONDS
    assert limiter.remaining("c", None, 100, 5, None).requests_today == 0
    limiter.close()


def test_the_window_slides(db: Path) -> None:
    limiter = Limiter(db)
    for _ in range(3):
        limiter.admit("c", 3, 0.2, None)
    with pytest.raises(RateLimited):
        limiter.admit("c", 3, 0.2, None)
    deadline = time.monotonic() + 10
    while outcome(lambda: limiter.admit("c", 3, 0.2, None)) != "ok":
        assert time.monotonic() < deadline, "the window never slid"
        time.sleep(0.01)
    limiter.close()


def test_counters_survive_a_restart(db: Path) -> None:
    limiter = Limiter(db)
    for _ in range(4):
        limiter.admit("c", 6, 3600, 10)
    limiter.add_tokens("c", 700)
    limiter.close()
    again = Limiter(db)
    assert again.tokens_left("c", 1000) == 300
    results = [outcome(lambda: again.admit("c", 6, 3600, 10)) for _ in range(5)]
    assert results == ["ok", "ok", "rate", "rate", "rate"]  # 4 + 2 = the rate limit of 6
    again.close()
    third = Limiter(db)
    left = third.remaining("c", 6, 3600, 10, 1000)
    assert (left.requests_today, left.requests_in_window, left.llm_tokens_today) == (4, 0, 300)
    third.close()


def test_a_lower_rate_after_restart_keeps_the_newest_requests(db: Path) -> None:
    limiter = Limiter(db)
    for _ in range(5):
        limiter.admit("c", 10, 3600, None)
    limiter.close()
    again = Limiter(db)
    with pytest.raises(RateLimited):
        again.admit("c", 3, 3600, None)
    assert again.remaining("c", 20, 3600, None, None).requests_in_window == 17
    again.close()


def test_a_new_day_resets_quotas(db: Path) -> None:
    now = [DAY_SECONDS * 20000 + 5.0]
    limiter = Limiter(db, clock=lambda: now[0])
    limiter.admit("c", None, 60, 1)
    limiter.add_tokens("c", 50)
    with pytest.raises(QuotaExceeded) as info:
        limiter.admit("c", None, 60, 1)
    assert info.value.data["retry_after"] == DAY_SECONDS - 5.0
    assert limiter.tokens_left("c", 50) == 0
    now[0] += DAY_SECONDS
    limiter.admit("c", None, 60, 1)
    assert limiter.tokens_left("c", 50) == 50
    assert limiter.usage() == {"c": {"requests_today": 1, "llm_tokens_today": 0, "requests_in_window": 0}}
    limiter.close()


def test_errors_are_rpc_errors(db: Path) -> None:
    limiter = Limiter(db)
    limiter.admit("c", 1, 60, None)
    with pytest.raises(RPCError) as info:
        limiter.admit("c", 1, 60, None)
    assert info.value.to_error()["code"] == -32029
    limiter.close()


def test_large_windows_wait_for_a_full_flush(db: Path) -> None:
    limiter = Limiter(db)
    for _ in range(5000):
        limiter.admit("big", 10000, 3600, None)
    limiter.admit("small", 10, 3600, None)
    limiter.flush(windows=False)

    def seen(client: str) -> tuple[int | None, int]:
        reader = Limiter(db)
        try:
            left = reader.remaining(client, 10000, 3600, None, None)
            return left.requests_in_window, left.requests_used_today
        finally:
            reader.close()

    assert seen("big") == (10000, 5000)  # the count is saved, the 5000-entry window not yet
    assert seen("small") == (9999, 1)
    limiter.flush()
    assert seen("big") == (5000, 5000)
    limiter.close()


def test_token_reservations_are_exact_under_threads(db: Path) -> None:
    limiter = Limiter(db)
    held: list[TokenReservation] = []
    refused: list[QuotaExceeded] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(20):
            try:
                reservation = limiter.reserve("c", 30, 1000, "tier FREE")
            except QuotaExceeded as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    held.append(reservation)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Admitted while anything is neither used nor reserved: 33 * 30 = 990 < 1000, so a 34th, then no more.
    assert len(held) == 34 and len(refused) == 8 * 20 - 34
    assert refused[0].data["limit"] == 1000 and refused[0].data["reserved"] == 1020 and refused[0].data["left"] == 0
    assert "tier FREE" in refused[0].message and "1000" in refused[0].message
    assert limiter.tokens_left("c", 1000) == 0
    for reservation in held:
        assert limiter.settle(reservation, 10)
    assert limiter.tokens_left("c", 1000) == 1000 - 340
    assert limiter.remaining("c", None, 60, None, 1000).llm_tokens_used_today == 340
    limiter.close()


def test_a_reservation_settles_once_and_across_midnight(db: Path) -> None:
    now = [DAY_SECONDS * 20000 + DAY_SECONDS - 1.0]
    limiter = Limiter(db, clock=lambda: now[0])
    limiter.add_tokens("c", 40)
    reservation = limiter.reserve("c", 50, 100)
    assert limiter.tokens_left("c", 100) == 10
    now[0] += 2.0  # the call is still running at midnight
    assert limiter.tokens_left("c", 100) == 50  # yesterday's use is gone, the call in flight still holds
    assert limiter.settle(reservation, 7)
    assert not limiter.settle(reservation, 7)  # a second settle (e.g. an error after a cancel) changes nothing
    assert limiter.tokens_left("c", 100) == 93
    with pytest.raises(ValueError):
        limiter.reserve("c", -1, 100)
    limiter.close()


def test_reservations_are_persisted_as_used_so_a_crash_charges_them(db: Path) -> None:
    limiter = Limiter(db)
    limiter.add_tokens("c", 5)
    reservation = limiter.reserve("c", 500, None)
    limiter.flush()
    after_crash = Limiter(db)  # the first one never settles: its process died mid-call
    assert after_crash.remaining("c", None, 60, None, None).llm_tokens_used_today == 505
    after_crash.close()
    limiter.settle(reservation, 12)
    limiter.close()  # a clean end writes the settled use
    again = Limiter(db)
    assert again.remaining("c", None, 60, None, None).llm_tokens_used_today == 17
    again.close()
