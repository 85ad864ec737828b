"""A bounded shutdown for the operator: exit within SHUTDOWN_BUDGET seconds of SIGTERM, whatever is running.

Kopf stops gracefully, but "gracefully" has no upper bound when the API
server is away: it waits 5 s for tasks that are still retrying API calls, and
longer for anything that ignores cancellation. In a pod that turns every node
drain and control-plane hiccup into a stall until the kubelet's SIGKILL. The
operator keeps no state of its own (status and the children are the state, and
every reconcile is idempotent), so abandoning a request in flight loses
nothing: the next operator redoes it.

`arm()` starts a watchdog thread when shutdown begins (on SIGTERM/SIGINT in
`ascend-mlops operator`, and from the cleanup handler for `kopf run`). Halfway
to the deadline it cancels the tasks that are still running, except the ones
it was told to keep (the operator's own top-level tasks), so that Kopf's
graceful path ends at once; if the process is still alive at the deadline it
logs what was still running and ends the process with exit code 0. A thread,
not a loop timer, because a loop that is busy retrying must not be able to
postpone it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any, Final

logger = logging.getLogger(__name__)

SHUTDOWN_BUDGET: Final = 4.0  # seconds from the signal to the exit (the kubelet's default grace is 30)

_lock = threading.Lock()
_armed_at: float | None = None


def arm(
    loop: asyncio.AbstractEventLoop | None = None,
    budget: float = SHUTDOWN_BUDGET,
    keep: Iterable[asyncio.Task[Any]] = (),
) -> None:
    """Start the watchdog once; later calls (signal, then cleanup) keep the first deadline.

    Only where the operator owns the process: Kopf run from the main thread. An
    operator embedded in a thread of another program (tests, KopfRunner) stops
    with its thread, and ending the whole process is not its call.
    """
    global _armed_at
    if threading.current_thread() is not threading.main_thread():
        return
    with _lock:
        if _armed_at is not None:
            return
        _armed_at = time.monotonic()
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
    thread = threading.Thread(target=_watch, args=(loop, budget, frozenset(keep)), name="shutdown-watchdog", daemon=True)
    thread.start()


def _cancel_others(loop: asyncio.AbstractEventLoop, keep: frozenset[asyncio.Task[Any]]) -> None:
    others = [task for task in asyncio.all_tasks(loop) if task not in keep and not task.done()]
    if others:
        logger.info("shutdown: cancelling %d task(s) still running", len(others))
    for task in others:
        task.cancel()


def _watch(loop: asyncio.AbstractEventLoop | None, budget: float, keep: frozenset[asyncio.Task[Any]]) -> None:
    time.sleep(budget / 2)
    if loop is not None and keep:
        try:
            loop.call_soon_threadsafe(_cancel_others, loop, keep)
        except RuntimeError:  # the loop is already closed: the process is on its way out
            pass
    time.sleep(budget / 2)
    pending: list[str] = []
    if loop is not None and not loop.is_closed():
        try:
            pending = sorted({task.get_name() for task in asyncio.all_tasks(loop) if not task.done()})
        except RuntimeError:  # the set changed while we looked: the names are only for the log
            pending = []
    shown = ", ".join(pending[:10]) + (f" and {len(pending) - 10} more" if len(pending) > 10 else "")
    logger.warning(
        "shutdown still running %.0fs after the stop signal; exiting now%s",
        budget, f" (unfinished: {shown})" if shown else "",
    )
    logging.shutdown()
    os._exit(0)

