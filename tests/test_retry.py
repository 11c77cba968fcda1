"""The worker loop every sender shares (retry.run_passes)."""

from __future__ import annotations

import asyncio
import sys

from incident_detector.retry import run_passes


def test_a_workers_loop_hands_each_failed_pass_on_and_stops_when_told():
    """run_passes: a pass that raises goes to on_error (with its traceback, inside the except)
    and the loop goes on; a set wakeup starts the next pass at once; stop ends it."""
    passes: list[int] = []
    errors: list[tuple[str, bool]] = []

    async def main() -> None:
        wakeup, stop = asyncio.Event(), asyncio.Event()

        async def step() -> None:
            passes.append(len(passes) + 1)
            if len(passes) == 1:
                raise RuntimeError("first pass fails")
            if len(passes) == 3:
                stop.set()
            wakeup.set()  # more is due: no pause before the next pass

        def on_error(exc: Exception) -> None:
            errors.append((str(exc), sys.exc_info()[1] is exc))
            wakeup.set()

        await asyncio.wait_for(run_passes(step, wakeup=wakeup, stop=stop, idle=lambda: 3600,
                                          on_error=on_error), timeout=60)

    asyncio.run(main())
    assert passes == [1, 2, 3]
    assert errors == [("first pass fails", True)]
