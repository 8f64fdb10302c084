"""The upload budget: slots by count and bytes, first come first served, nothing leaked."""

from __future__ import annotations

import asyncio
import gc

import numpy as np
import pytest

from orchard_server.uploads import UploadBudget, UploadSlot

MB = 1 << 20


async def _pending(budget: UploadBudget, nbytes: int) -> asyncio.Task[UploadSlot]:
    task = asyncio.ensure_future(budget.acquire(nbytes))
    await asyncio.sleep(0)  # let it run to its first wait
    return task


def test_the_count_bounds_small_uploads() -> None:
    async def main() -> None:
        budget = UploadBudget(2, 100 * MB)
        first = await budget.acquire(MB)
        await budget.acquire(MB)
        third = await _pending(budget, MB)
        assert not third.done() and budget.held == 2
        first.release_unless_held()
        assert (await third) is not None and budget.held == 2

    asyncio.run(main())


def test_the_bytes_bound_large_uploads_but_one_always_fits() -> None:
    async def main() -> None:
        budget = UploadBudget(4, 1024 * MB)
        huge = await budget.acquire(1536 * MB)  # above the buffer alone: admitted
        second = await _pending(budget, 1024 * MB)
        assert not second.done()
        huge.release_unless_held()
        slot = await second
        assert (budget.held, budget.held_bytes) == (1, 1024 * MB)
        slot.release_unless_held()
        assert (budget.held, budget.held_bytes) == (0, 0)

    asyncio.run(main())


def test_waiters_are_admitted_in_arrival_order() -> None:
    async def main() -> None:
        budget = UploadBudget(4, 10 * MB)
        first = await budget.acquire(8 * MB)
        big = await _pending(budget, 8 * MB)
        small = await _pending(budget, 1 * MB)
        # The small one would fit beside the first, but the big one came before it.
        assert not big.done() and not small.done()
        first.release_unless_held()
        await asyncio.sleep(0)
        assert big.done() and small.done()
        assert (budget.held, budget.held_bytes) == (2, 9 * MB)

    asyncio.run(main())


def test_a_cancelled_waiter_takes_nothing_and_lets_the_next_in() -> None:
    async def main() -> None:
        budget = UploadBudget(1, 10 * MB)
        first = await budget.acquire(MB)
        gone = await _pending(budget, MB)
        after = await _pending(budget, MB)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        first.release_unless_held()
        await after
        assert (budget.held, budget.held_bytes) == (1, MB)

    asyncio.run(main())


def test_a_delivered_result_holds_its_slot_until_its_arrays_are_freed() -> None:
    async def main() -> None:
        budget = UploadBudget(1, 10 * MB)
        slot = await budget.acquire(MB)
        arrays = [np.zeros(10), np.ones(3)]
        slot.hold_while_alive(arrays)
        slot.release_unless_held()  # held: the arrays still live
        assert budget.held == 1
        del arrays
        gc.collect()
        await asyncio.sleep(0)  # the release is scheduled on the loop
        assert (budget.held, budget.held_bytes) == (0, 0)

    asyncio.run(main())


@pytest.mark.parametrize(("slots", "buffer"), [(0, 1), (1, 0)])
def test_a_budget_needs_room(slots: int, buffer: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        UploadBudget(slots, buffer)
