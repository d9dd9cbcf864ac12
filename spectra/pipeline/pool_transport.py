"""Snapshots and results on their way between ``spectra.analyze`` and its worker processes.

A snapshot travels as its fields and its matrices as numpy arrays with their strides (a dense parameter's own
memory, sent out of band straight to the socket; bfloat16 and other dtypes numpy lacks as their bits), and is
rebuilt in the worker with the same dtypes and strides, so the same BLAS calls follow. A result travels as
each analyzer's measurements or exception (with its traceback text), or as :data:`LOCAL` when it would not
survive the trip.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import traceback
from typing import Any

from ..snapshot import LayerState

__all__ = ["LOCAL", "pack_tensor", "unpack_tensor", "pack_state", "unpack_state", "state_key", "portable_outcomes",
           "send", "recv"]

LOCAL = "local"  # a job the parent analyzes itself
_RAW = hasattr(os, "readv")  # arrays go through the socket unframed, without Connection's intermediate copies


def pack_tensor(t: Any) -> tuple[Any, ...]:
    """A CPU tensor as ``("torch", array, dtype, shape, strides, order)``; a numpy array as ``("numpy", array)``.

    Raises:
        ValueError: a numpy view that is neither C- nor Fortran-contiguous (the parent analyzes it).
    """
    import numpy as np

    if isinstance(t, np.ndarray):
        if not (t.flags.c_contiguous or t.flags.f_contiguous):
            raise ValueError("a non-contiguous numpy view is analyzed in the parent")
        return ("numpy", t)
    import torch

    t = t.detach()
    order = sorted(range(t.dim()), key=lambda d: (-t.stride(d), d))
    dense = t.permute(order)
    if not dense.is_contiguous():  # a strided view (e.g. columns of a fused matrix): its values, rebuilt there
        dense, order = t.contiguous(), list(range(t.dim()))
    try:
        data = dense.numpy()
    except TypeError:  # bfloat16 and other dtypes numpy lacks: their bits
        data = dense.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]).numpy()
    return ("torch", data, str(t.dtype).removeprefix("torch."), tuple(t.shape), tuple(t.stride()), tuple(order))


def unpack_tensor(packed: tuple[Any, ...]) -> Any:
    """What :func:`pack_tensor` packed: the same dtype, shape, strides and values."""
    if packed[0] == "numpy":
        return packed[1]
    import torch

    _, data, dtype, shape, strides, order = packed
    x = torch.from_numpy(data)
    if str(x.dtype).removeprefix("torch.") != dtype:
        x = x.view(getattr(torch, dtype))
    x = x.permute([order.index(d) for d in range(len(order))])
    if tuple(x.stride()) != strides:  # the same strides as in the parent: the same BLAS calls downstream
        x = torch.empty_strided(shape, strides, dtype=x.dtype).copy_(x)
    return x


def pack_state(st: LayerState) -> dict[str, Any]:
    """Every field of the snapshot (its matrices packed), none of its cached decompositions."""
    skip = ("tensors", "_cache")
    out = {f.name: getattr(st, f.name) for f in dataclasses.fields(st) if f.init and f.name not in skip}
    out["context"] = dict(out.get("context") or {})
    out["tensors"] = {k: pack_tensor(t) for k, t in st.tensors.items() if t is not None}
    return out


def unpack_state(payload: dict[str, Any]) -> LayerState:
    """The snapshot :func:`pack_state` packed (``payload`` is consumed)."""
    tensors = {k: unpack_tensor(v) for k, v in payload.pop("tensors").items()}
    return LayerState(tensors=tensors, **payload)


def state_key(st: LayerState) -> tuple[Any, ...]:
    """What tells the engine's snapshot apart from the others of the same call: layer, view, step, matrices."""
    return (st.layer, st.view, st.step, st.context.get("matrix"), tuple(sorted(k for k in st.tensors if st.has(k))))


def portable_outcomes(outcomes: dict[str, tuple[str, Any]]) -> Any:
    """``outcomes`` with each exception's traceback text, or :data:`LOCAL` when one would not survive pickling.

    Args:
        outcomes: each analyzer's ``("ok", measurements)`` or ``("err", exception)``.
    """
    out: dict[str, tuple[Any, ...]] = {}
    try:
        for name, (kind, value) in outcomes.items():
            if kind == "err":
                back = pickle.loads(pickle.dumps(value))
                if type(back) is not type(value) or str(back) != str(value):
                    return LOCAL
                out[name] = (kind, value, "".join(traceback.format_exception(value)))
            else:
                out[name] = (kind, value)
        pickle.dumps(out)
    except Exception:
        return LOCAL
    return out


def send(conn: Any, obj: Any) -> None:
    """Send ``obj`` with its arrays out of band (pickle protocol 5): a header, then each array's memory as it is."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    conn.send_bytes(pickle.dumps((head, [v.nbytes for v in views])))
    for v in views:
        if _RAW:  # straight from the array to the socket
            while v:
                v = v[os.write(conn.fileno(), v):]
        else:  # pragma: no cover - not POSIX
            conn.send_bytes(v)


def recv(conn: Any) -> Any:
    """What :func:`send` sent; each array gets a writable buffer of its own, filled straight from the socket.

    Raises:
        EOFError: the other end closed the connection.
    """
    head, sizes = pickle.loads(conn.recv_bytes())
    buffers = []
    for n in sizes:
        buf = bytearray(n)
        if _RAW:
            view = memoryview(buf)
            while view:
                got = os.readv(conn.fileno(), [view])
                if not got:
                    raise EOFError
                view = view[got:]
        else:  # pragma: no cover - not POSIX
            conn.recv_bytes_into(buf)
        buffers.append(buf)
    return pickle.loads(head, buffers=buffers)
