"""The forked process pool of the in-process runs (export and import), which notices a process
that dies: the run fails naming the item it was on instead of waiting for it forever.

Results come back through a spool file of each process, and only where they lie goes through
the pool's pipe: a message that small is one atomic write, so a process killed mid-reply
cannot leave half a message that the pool would wait forever to read the rest of.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from worker.errors import PoolProcessDied

Item = TypeVar("Item")
Result = TypeVar("Result")

_slots: Any = None  # (pid, item index) per pool process, in memory shared with the parent
_slot = -1
_replies: Any = None  # this process's spool file of results
_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def cores() -> int:
    """The cores this process may run on (its affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def pool_size(jobs: int | None, items: int) -> int:
    """Processes worth starting: as asked, but no more than the cores or the items."""
    return max(1, min(jobs or cores(), cores(), items))


def _start(
    slots: Any, claim: Any, spool_dir: str, initializer: Callable[..., None], initargs: tuple
) -> None:
    global _slots, _slot, _replies
    # Ctrl-C and SIGTERM are the parent's to handle: it stops the pool, then cleans up. They
    # were blocked across the fork, so none lands on the parent's handler in here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    _slots = slots
    with claim:
        _slot = next(i for i in range(0, len(slots), 2) if slots[i] == 0)
        slots[_slot], slots[_slot + 1] = os.getpid(), -1
    _replies = open(os.path.join(spool_dir, f"{os.getpid()}.replies"), "w+b")
    initializer(*initargs)


def _call(function: Callable[[Any], Any], first: int, items: list[Any]) -> tuple[str, int, int]:
    """`function` over a group of items, the slot naming the one in hand (its index)."""
    results = []
    try:
        for index, item in enumerate(items, first):
            _slots[_slot + 1] = index
            results.append(function(item))
        reply: tuple = (True, results)
    except Exception as exc:
        reply = (False, exc, traceback.format_exc())
    finally:
        _slots[_slot + 1] = -1
    data = pickle.dumps(reply, pickle.HIGHEST_PROTOCOL)
    offset = _replies.seek(0, os.SEEK_END)
    _replies.write(data)
    _replies.flush()
    return _replies.name, offset, len(data)


def _reply(where: tuple[str, int, int]) -> Any:
    path, offset, size = where
    with open(path, "rb") as replies:
        replies.seek(offset)
        reply = pickle.loads(replies.read(size))
    if reply[0]:
        return reply[1]
    reply[1].add_note(f"in the pool process:\n{reply[2]}")
    raise reply[1]


def ordered_map(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    workers: int,
    initializer: Callable[..., None],
    initargs: tuple,
    describe: Callable[[Item], str],
    spool_dir: str,
    groups: list[range] | None = None,
) -> Iterator[Result]:
    """`function` over `items`, in order, in `workers` forked processes (here when 1), which
    spool their results in `spool_dir`. Items are handed out in `groups` (consecutive ranges;
    one item each by default), so that small items do not each pay a round trip.

    At most two groups per process are in flight, so results never pile up. A process that
    dies (SIGKILL from the OOM killer, a crash) raises PoolProcessDied naming the item it was
    on, `describe(item)`. Close the iterator to stop the pool early."""
    if workers <= 1:
        initializer(*initargs)
        yield from map(function, items)
        return
    if groups is None:
        groups = [range(i, i + 1) for i in range(len(items))]
    context = multiprocessing.get_context("fork")
    # Lock-free: a process killed while holding a lock would leave it held for good.
    slots, claim = context.RawArray("q", [0, -1] * workers), context.Lock()
    pool = ProcessPoolExecutor(workers, context, initializer=_start,
                               initargs=(slots, claim, spool_dir, initializer, initargs))
    processes: dict[int, multiprocessing.Process] = {}
    in_flight: deque[Future] = deque()
    queued = ((group.start, [items[i] for i in group]) for group in groups)
    try:
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            for first, group in queued:
                in_flight.append(pool.submit(_call, function, first, group))
                processes.update(pool._processes)  # forked at the first submit (fork context)
                if len(in_flight) >= 2 * workers:
                    break
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        while in_flight:
            results = _reply(in_flight.popleft().result())
            for first, group in queued:
                # A pool that broke since (a process died) refuses new work here.
                in_flight.append(pool.submit(_call, function, first, group))
                break
            yield from results
    except BrokenProcessPool:
        raise _died(processes, slots, items, describe) from None
    finally:
        _stop(pool, processes)


def _stop(pool: ProcessPoolExecutor, processes: dict[int, multiprocessing.Process]) -> None:
    """No process left behind, even mid-item: they are ours and their work is thrown away."""
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        if process.exitcode is None:
            process.terminate()
    for process in processes.values():
        process.join(timeout=5)
        if process.exitcode is None:  # stuck where SIGTERM cannot reach
            process.kill()
            process.join()
    pool.shutdown(wait=True)


def _exit_code(process: multiprocessing.Process, wait: float = 1.0) -> int | None:
    """How a process ended, None if it has not. The pool's own thread may be reaping it at
    the same time: a join then returns early, finding the child gone, before that thread has
    recorded the code, which it does a moment later."""
    deadline = time.monotonic() + wait
    while process.exitcode is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process.exitcode


def _died(processes: dict, slots: Any, items: Sequence, describe: Callable) -> PoolProcessDied:
    """The error naming what the dead process was on. The pool terminates the others
    (SIGTERM) once one dies, so the dead one is the one that ended otherwise."""
    for process in processes.values():
        process.join(timeout=10)
    ends = {pid: _exit_code(process) for pid, process in processes.items()}
    dead = [pid for pid, code in ends.items() if code not in (None, -signal.SIGTERM)]
    dead = dead or list(ends)
    on = {slots[i]: slots[i + 1] for i in range(0, len(slots), 2)}
    pid = next((p for p in dead if on.get(p, -1) >= 0), dead[0] if dead else 0)
    code = ends.get(pid)
    how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
           else f"exit code {code}")
    hint = ("out of memory? try fewer --jobs" if code == -signal.SIGKILL
            else "see its messages above")
    index = on.get(pid, -1)
    if index < 0:
        return PoolProcessDied(f"a pool process died between items ({how}); {hint}")
    return PoolProcessDied(
        f"{describe(items[index])}: the process working on it died ({how}); {hint}")
