"""How the background worker thread sets itself up so that it does not fight training for the CPU.

* :func:`pin_torch_threads`: the worker's own torch intra-op threads (the training thread's are left alone);
* :func:`yield_to_training`: the worker's CPU priority, lowest where the OS has per-thread priorities;
* :func:`ready_events`: CUDA events the worker waits on before it reads copies made on the training stream;
* :func:`auto_decompose_threads`: how many threads decompose a due step's matrices (either mode);
* :func:`worker_has_a_core`: whether ``background=True`` has a core to analyze on beside training.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Iterable, Mapping

__all__ = ["pin_torch_threads", "yield_to_training", "ready_events", "auto_decompose_threads",
           "torch_threads_of_caller", "usable_cores", "worker_has_a_core", "WORKER_NAME"]

WORKER_NAME = "spectra-analysis"


def pin_torch_threads(n: int | None) -> None:
    """Use ``n`` torch intra-op threads in the calling thread only (``None``: leave them).

    ``torch.set_num_threads`` sets the calling thread's OpenMP and MKL threads, and also the default that threads
    started later pick up; the default is put back from a throwaway thread, so only the caller keeps ``n``.
    The training thread's own setting is never touched.
    """
    if n is None:
        return
    import torch

    current = torch.get_num_threads()  # this thread's, initialised from the process default
    if current == n:
        return
    torch.set_num_threads(n)
    restore = threading.Thread(target=torch.set_num_threads, args=(current,), name=f"{WORKER_NAME}-restore",
                               daemon=True)
    restore.start()
    restore.join()


def yield_to_training() -> None:
    """Give the calling (worker) thread the lowest CPU priority, where the OS allows a per-thread one (Linux).

    With a free core this changes nothing: the worker runs there. When training's threads use every core, the
    worker no longer time-slices with them at equal priority (which made background mode slower than
    synchronous analysis): it runs when a core is idle, and otherwise the bounded queue fills and training
    waits for it, as the synchronous mode would. Only this thread is affected; it is never raised back (an
    unprivileged process cannot), and it ends with the worker.
    """
    setpriority = getattr(os, "setpriority", None)
    if not sys.platform.startswith("linux") or setpriority is None:  # elsewhere the priority is per process
        return
    try:
        setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # Linux: a thread id is a task id
    except OSError:  # not permitted, or the platform's setpriority is per process: leave it
        pass


def ready_events(copies: Mapping[int, Mapping[str, Any]]) -> list[tuple[Any, Any]]:
    """``(device, event)``: one CUDA event per device of the copies, recorded on its current stream (none for
    CPU tensors)."""
    devices = {t.device for item in copies.values() for t in item.values() if getattr(t, "is_cuda", False)}
    if not devices:
        return []
    import torch

    events = []
    for dev in devices:
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(dev))
        events.append((dev, ev))
    return events


def torch_threads_of_caller() -> int:
    """The calling thread's torch intra-op threads (1 when torch is not imported)."""
    import sys

    torch = sys.modules.get("torch")
    return int(torch.get_num_threads()) if torch is not None else 1


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one, else ``os.cpu_count()``)."""
    affinity = getattr(os, "sched_getaffinity", None)
    if affinity is not None:
        try:
            return max(1, len(affinity(0)))
        except OSError:
            pass
    return max(1, os.cpu_count() or 1)


def worker_has_a_core(*, torch_threads: int, cores: int, devices: Iterable[str] = ()) -> bool:
    """``background=True``: does a due step's analysis have a core of its own beside training?

    Training on an accelerator (any copy on a device that is not ``"cpu"``) leaves the host's cores to the
    worker, whatever torch's thread count. On the CPU, torch's intra-op threads take ``torch_threads`` of the
    ``cores``; when they take them all, a worker thread could only share cores with training, which costs more
    than analyzing in the training thread on torch's own team (docs/design.md, "Background analysis and cost
    awareness"), so the step is analyzed there.

    Args:
        torch_threads: the training thread's torch intra-op threads.
        cores: the cores the process may use (:func:`usable_cores`).
        devices: the device types of the step's copies (``"cpu"``, ``"cuda"``, ...).
    """
    if any(d != "cpu" for d in devices):
        return True
    return cores > max(1, torch_threads)


def auto_decompose_threads(*, background: bool, torch_threads: int, cores: int | None = None) -> int:
    """``decompose_threads=None``: how many threads decompose a due step's matrices.

    Synchronously training waits, so every core (up to 4) decomposes. In the background the worker takes the
    cores training leaves free (torch's intra-op threads use the others), at least one. When training already
    uses every core, ``background=True`` analyzes in the training thread (:func:`worker_has_a_core`), which
    then uses them all, as the synchronous mode does; so does the worker of ``background="always"`` (at the
    lowest priority it runs when training leaves a core idle, or while training waits for the queue).
    """
    cores = max(1, cores if cores is not None else usable_cores())
    if not background:
        return min(4, cores)
    free = cores - max(1, torch_threads)
    return min(4, free) if free > 0 else min(4, cores)
