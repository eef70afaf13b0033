"""Data-parallel training and batch inference on a Dask cluster (the extra
``rnnfast[distributed]``: ``pip install "rnnfast[distributed]"``).

:func:`fit_distributed` trains a :class:`~rnnfast.CharRNN` or :class:`~rnnfast.SequenceRegressor`
as its ``fit`` does, with the global batch (the ``batch_size`` streams of
:func:`rnnfast.train.batchify`) split over the cluster's workers. Every step the weights go out
once, each worker computes the gradient of its columns, the gradients come back and are summed,
clipped and applied by one optimizer step on the client: the result equals ``model.fit`` on one
machine (float64 to ~1e-12, float32 to ~1e-5). Dask places the work, moves the data and runs
again the tasks of a lost worker; every task is a pure function of the weights, the shard and
the truncated-BPTT state, so a rerun gives the same numbers.

:func:`predict_distributed` runs a model over a ``dask.bag`` or ``dask.array`` of sequences.

Dask is imported when these functions are called: without it they raise an ImportError that
names the extra.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from rnnfast import _distributed_worker as worker
from rnnfast._validation import check_int, check_nonnegative
from rnnfast.models import CharRNN, SequenceRegressor, load_model
from rnnfast.models._base import make_optimizer
from rnnfast.models.file_format import read_npz, write_npz
from rnnfast.train import Optimizer, bptt_windows, clip_grad_norm

__all__ = [
    "DistributedProgress",
    "SchedulerLostError",
    "fit_distributed",
    "predict_distributed",
    "state_path",
]

# Weights up to this size go inside every step task rather than in one task of their own.
_INLINE_WEIGHTS_BYTES = 1 << 21

_EXTRA_HINT = 'rnnfast.distributed needs Dask: pip install "rnnfast[distributed]"'


def _dask() -> Any:
    """The ``distributed`` module, or an ImportError naming the extra."""
    try:
        import dask  # noqa: F401
        import distributed
    except ImportError as exc:
        raise ImportError(f"{_EXTRA_HINT} ({exc})") from exc
    return distributed


class SchedulerLostError(ConnectionError):
    """The client lost its Dask scheduler (it died, or the network to it failed) during
    :func:`fit_distributed`. The message names the scheduler, the step, and the checkpoint to
    resume from."""


class DistributedProgress(NamedTuple):
    """What :func:`fit_distributed` reports after every optimizer step: the fields of
    :class:`rnnfast.train.Progress` and the step's time split."""

    step: int
    """Optimizer steps taken so far (counting those before a resume)."""
    loss: float
    """The loss of the global batch's window just trained."""
    tokens: int
    """Time steps x global batch trained so far in this call."""
    elapsed: float
    """Seconds since the call started."""
    compute_seconds: float
    """This step's compute on the slowest worker (forward and backward)."""
    communication_seconds: float
    """The rest of this step's wall time outside the client's optimizer update: moving
    weights, gradients and states, and Dask's scheduling."""

    @property
    def tokens_per_sec(self) -> float:
        """Training throughput, ``tokens / elapsed``."""
        return self.tokens / self.elapsed if self.elapsed > 0 else float("inf")


def state_path(checkpoint: str | os.PathLike[str]) -> str:
    """Where :func:`fit_distributed` keeps the rest of a checkpoint (optimizer state, step,
    truncated-BPTT states, losses so far) beside the model file ``checkpoint``."""
    return os.fspath(checkpoint) + ".state.npz"


# --------------------------------------------------------------------------------------------
# Training


def _split(batch_size: int, parts: int) -> list[tuple[int, int]]:
    """``batch_size`` columns in ``parts`` contiguous, near-equal, non-empty ranges."""
    parts = min(parts, batch_size)
    bounds = [round(i * batch_size / parts) for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


def _is_source(data: Any) -> bool:
    """True when the workers read the data themselves: a path object or a loader."""
    return callable(data) or isinstance(data, os.PathLike)


def _state_to_arrays(prefix: str, state: Any) -> dict[str, np.ndarray]:
    if state is None:
        return {}
    parts = state if isinstance(state, tuple) else (state,)
    out = {f"{prefix}/{i}": np.asarray(p) for i, p in enumerate(parts)}
    out[f"{prefix}/n"] = np.array(len(parts) if isinstance(state, tuple) else 0)
    return out


def _state_from_arrays(prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    if f"{prefix}/n" not in arrays:
        return None
    n = int(arrays[f"{prefix}/n"])
    if n == 0:
        return arrays[f"{prefix}/0"]
    return tuple(arrays[f"{prefix}/{i}"] for i in range(n))


def _opt_to_arrays(prefix: str, steps: int, state: dict[str, dict[str, np.ndarray]]):
    out = {f"{prefix}/steps": np.array(steps, dtype=np.int64)}
    for name, entries in state.items():
        for key, value in entries.items():
            out[f"{prefix}/{name}/{key}"] = np.asarray(value)
    return out


def _opt_from_arrays(prefix: str, names: Sequence[str], arrays: dict[str, np.ndarray]):
    state: dict[str, dict[str, np.ndarray]] = {name: {} for name in names}
    for key, value in arrays.items():
        if key.startswith(prefix + "/") and key != f"{prefix}/steps":
            name, _, entry = key[len(prefix) + 1 :].rpartition("/")
            state[name][entry] = value.copy()
    return int(arrays[f"{prefix}/steps"]), state


def _weights_digest(model: Any) -> np.ndarray:
    digest = hashlib.sha256(worker.flat_weights(model).tobytes()).digest()
    return np.frombuffer(digest, dtype=np.uint8).copy()


def _save_checkpoint(
    path: str | os.PathLike[str],
    model: Any,
    opt: Optimizer,
    step: int,
    losses: list[float],
    states: list[Any],
    shard_opts: list[Any] | None,
    columns: list[tuple[int, int]],
) -> None:
    """The model file (``model.save``), then the rest beside it, each written atomically; the
    weights' digest in the second ties the pair together."""
    model.save(path)
    arrays = {
        "step": np.array(step, dtype=np.int64),
        "losses": np.array(losses, dtype=np.float64),
        "columns": np.array(columns, dtype=np.int64).reshape(-1, 2),
        "weights_sha256": _weights_digest(model),
    }
    arrays |= _opt_to_arrays("opt", opt.steps, opt.state)
    for k, state in enumerate(states):
        arrays |= _state_to_arrays(f"bptt/{k}", state)
    for k, saved in enumerate(shard_opts or []):
        if saved is not None:
            arrays |= _opt_to_arrays(f"shard_opt/{k}", saved[0], saved[1])
    write_npz(state_path(path), arrays)


def _load_checkpoint(path: str | os.PathLike[str], model: Any, opt: Optimizer) -> dict[str, Any]:
    saved = load_model(path, (type(model),))
    model.load_state_dict(saved.state_dict())
    if isinstance(model, SequenceRegressor):
        model.mean, model.std = saved.mean, saved.std
    arrays = read_npz(state_path(path))
    if not np.array_equal(arrays["weights_sha256"], _weights_digest(model)):
        raise ValueError(
            f"{state_path(path)} does not belong to the weights in {os.fspath(path)!r} "
            "(a checkpoint interrupted between its two files?)"
        )
    opt.steps, opt.state = _opt_from_arrays("opt", list(model.parameters()), arrays)
    columns = [tuple(int(c) for c in row) for row in arrays["columns"]]
    n = len(columns)
    names = list(model.parameters())
    shard_opts = [
        _opt_from_arrays(f"shard_opt/{k}", names, arrays)
        if f"shard_opt/{k}/steps" in arrays
        else None
        for k in range(n)
    ]
    return {
        "step": int(arrays["step"]),
        "losses": [float(v) for v in arrays["losses"]],
        "columns": columns,
        "states": [_state_from_arrays(f"bptt/{k}", arrays) for k in range(n)],
        "shard_opts": shard_opts,
    }


def _gather(client: Any, futures: list[Any]) -> list[Any]:
    """The futures' results; a ConnectionError as soon as the client is no longer connected to
    its scheduler (rather than after Dask's reconnection timeout)."""
    finished = threading.Event()
    left = [len(futures)]
    lock = threading.Lock()

    def one_done(_: Any) -> None:
        with lock:
            left[0] -= 1
            if left[0] == 0:
                finished.set()

    for f in futures:
        f.add_done_callback(one_done)
    while not finished.wait(0.5):
        if client.status != "running":
            raise ConnectionError(
                f"the client is {client.status!r}: its connection to the scheduler is gone"
            )
    return client.gather(futures)


def fit_distributed(
    model: CharRNN | SequenceRegressor,
    data: Any,
    client: Any,
    *,
    steps: int | None = None,
    bptt: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    optimizer: str | Optimizer = "adam",
    callback: Callable[[DistributedProgress], bool | None] | None = None,
    max_grad_norm: float | None = 5.0,
    sync_every: int = 1,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 100,
    resume: str | os.PathLike[str] | None = None,
) -> list[float]:
    """Train ``model`` in place on a Dask cluster, as ``model.fit(data, ...)`` does on one
    machine, and return the loss of every step.

    The global batch's ``batch_size`` streams are split into one contiguous group of columns
    per worker (the *shards*). A shard is built once, on its worker, by a task: from its slice
    of ``data`` (sent once, inside the task) or, when ``data`` is a path or a loader, read by
    the worker itself; Dask keeps it there and rebuilds it from the task if the worker is lost.
    Each step, the weights go out once per worker (inside the step tasks; weights over 2 MB in
    one task of their own that the workers fetch), every shard's gradient task runs beside its
    shard, and the gradients and the shards' truncated-BPTT states come back.

    Args:
        model: a CharRNN or SequenceRegressor (trained in place).
        data: what ``model.fit`` takes (text, or a series); or an ``os.PathLike`` path every
            worker reads (UTF-8 text for a CharRNN; ``.npy`` or text numbers for a
            SequenceRegressor); or a picklable zero-argument callable returning the data (a
            seeded loader), called on the workers.
        client: a ``distributed.Client``.
        steps, bptt, batch_size, lr, optimizer, callback, max_grad_norm: as ``model.fit``
            (same defaults); the callback receives a :class:`DistributedProgress`.
        sync_every: 1 for synchronous data-parallel training (equal to ``fit``); K > 1 for
            local SGD: each shard takes K steps of its own (its gradient clipped and its own
            optimizer state kept), then the weights are averaged, weighted by shard width.
        checkpoint: a path: every ``checkpoint_every`` steps and at the end, the model is saved
            there (``model.save``, atomically) and the optimizer and BPTT states beside it
            (:func:`state_path`, atomically).
        checkpoint_every: steps between checkpoints.
        resume: a checkpoint path: load the weights, the optimizer and BPTT states and the
            losses from it and continue at the step after it; the returned losses include the
            ones before the checkpoint, so nothing is lost.

    Returns:
        The loss of every step (from step 1, also when resuming).

    Raises:
        ImportError: Dask is not installed.
        SchedulerLostError: the scheduler died or the connection to it was lost.
        ValueError, TypeError: bad arguments, as ``fit`` raises them.
    """
    distributed = _dask()
    if not isinstance(model, CharRNN | SequenceRegressor):
        raise TypeError(f"model must be a CharRNN or a SequenceRegressor, got {type(model)}")
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    is_char = isinstance(model, CharRNN)
    steps = check_int("steps", (1000 if is_char else 500) if steps is None else steps, 0)
    bptt = check_int("bptt", (64 if is_char else 50) if bptt is None else bptt, 1)
    batch_size = check_int(
        "batch_size", (32 if is_char else 16) if batch_size is None else batch_size, 1
    )
    sync_every = check_int("sync_every", sync_every, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    if max_grad_norm is not None:
        max_grad_norm = check_nonnegative("max_grad_norm", max_grad_norm)
    opt = make_optimizer(model, optimizer, lr)
    scheduler = getattr(client, "scheduler", None)
    address = getattr(scheduler, "address", None) or "the scheduler"
    run = uuid.uuid4().hex[:12]

    resumed: dict[str, Any] | None = None
    if resume is not None:
        resumed = _load_checkpoint(resume, model, opt)

    def lost(exc: BaseException, step: int) -> SchedulerLostError:
        if checkpoint is not None and last_checkpoint[0] is not None:
            path = os.fspath(checkpoint)
            where = (
                f"; the last checkpoint is {path!r} (after step {last_checkpoint[0]}): "
                f"continue with fit_distributed(..., resume={path!r})"
            )
        elif resume is not None:
            path = os.fspath(resume)
            where = f"; nothing was saved since {path!r}: resume from it again"
        elif checkpoint is not None:
            where = f"; no checkpoint yet (the first comes after step {checkpoint_every})"
        else:
            where = "; no checkpoint was kept (pass checkpoint=PATH to keep one)"
        return SchedulerLostError(
            f"lost the Dask scheduler {address} at step {step + 1} "
            f"({type(exc).__name__}: {exc}){where}"
        )

    last_checkpoint: list[int | None] = [None]
    comm_errors = (OSError, TimeoutError, concurrent.futures.CancelledError)

    try:
        workers = sorted(client.scheduler_info()["workers"])
    except comm_errors as exc:
        raise lost(exc, -1) from exc
    if not workers:
        raise ValueError("the Dask cluster has no workers")

    template = worker.pack((model, opt))
    try:
        if _is_source(data):
            probe = client.submit(worker.hold, template, key=f"rnnfast-probe-{run}")
            info = client.submit(worker.describe, probe, data, pure=False).result()
            del probe
            if isinstance(model, SequenceRegressor) and model.mean is None:
                model.mean, model.std = info["mean"], info["std"]
            length = info["length"]
            seq = None
        else:
            model.fit(data, steps=0)  # checks the data as fit does (and sets a regressor's mean)
            seq = worker.encoded(model, data)
            length = len(seq)
        template = worker.pack((model, opt))  # now with a regressor's standardization
        template_f = client.submit(worker.hold, template, key=f"rnnfast-template-{run}")
        rows = (length - 1) // batch_size
        if rows == 0:
            raise ValueError(
                f"a sequence of {length - 1} steps is too short for batch_size={batch_size}: "
                "each stream needs at least one step"
            )
        columns = _split(batch_size, len(workers))
        if resumed is not None and resumed["columns"] != columns:
            raise ValueError(
                f"the checkpoint split the batch as {resumed['columns']}, this cluster as "
                f"{columns}: resume with as many workers"
            )
        shards = []
        for k, (c0, c1) in enumerate(columns):
            source = data if seq is None else seq[c0 * rows : c1 * rows + 1]
            shards.append(
                client.submit(
                    worker.build_shard,
                    template_f,
                    source,
                    rows,
                    c0,
                    c1,
                    key=f"rnnfast-shard-{run}-{k}",
                    workers=[workers[k % len(workers)]],
                    allow_other_workers=True,
                )
            )
    except comm_errors as exc:
        raise lost(exc, -1) from exc

    windows = bptt_windows(rows, bptt)
    per_row = 1 if is_char else model.input_size
    states: list[Any] = [None] * len(columns)
    shard_opts: list[Any] = [None] * len(columns)
    losses: list[float] = []
    first = 0
    if resumed is not None:
        first = resumed["step"]
        losses = resumed["losses"]
        states = resumed["states"]
        shard_opts = resumed["shard_opts"]
    grads = model.grads
    params = model.parameters()
    placement = {k: [workers[k % len(workers)]] for k in range(len(columns))}
    known_workers = set(workers)
    tokens = 0
    start = time.perf_counter()
    step = first
    while step < steps:
        step_start = time.perf_counter()
        try:
            if client.status != "running":
                raise ConnectionError(
                    f"the client is {client.status!r}: its connection to the scheduler is gone"
                )
            # Every few steps, and after a lost worker was replaced, the step tasks follow the
            # shards to where Dask keeps them now (scheduler_info is a round trip).
            current = set(client.scheduler_info()["workers"]) if step % 10 == 0 else known_workers
            if current != known_workers:
                known_workers = current
                who = client.who_has(shards)
                for k, f in enumerate(shards):
                    held = who.get(f.key) or ()
                    placement[k] = list(held) or sorted(current)
            flat_w = worker.flat_weights(model)
            # Small weights ride inside each step task (one hop, client -> scheduler -> worker);
            # large ones go out once, as a task of their own that the workers fetch.
            if flat_w.nbytes <= _INLINE_WEIGHTS_BYTES:
                weights_f = flat_w
            else:
                weights_f = client.submit(worker.hold, flat_w, key=f"rnnfast-w-{run}-{step}")
            if sync_every == 1:
                i = step % len(windows)
                w = windows[i]
                if i == 0:
                    states = [None] * len(columns)
                total = (w.stop - w.start) * batch_size * per_row
                futures = [
                    client.submit(
                        worker.grad_step,
                        template_f,
                        weights_f,
                        shard,
                        states[k],
                        (w.start, w.stop),
                        total,
                        key=f"rnnfast-g-{run}-{step}-{k}",
                        workers=placement[k],
                        allow_other_workers=True,
                    )
                    for k, shard in enumerate(shards)
                ]
                results = _gather(client, futures)
                del futures, weights_f
                update_start = time.perf_counter()
                flat = results[0][0].copy()
                for r in results[1:]:
                    flat += r[0]
                worker.set_flat_weights(grads, flat)
                if max_grad_norm is not None:
                    clip_grad_norm(grads, max_grad_norm)
                opt.step()
                states = [r[2] for r in results]
                step_losses = [sum(r[1] for r in results) / total]
                compute = max(r[3] for r in results)
                new_tokens = (w.stop - w.start) * batch_size
                taken = 1
            else:
                taken = min(sync_every, steps - step)
                plan = []
                for s in range(step, step + taken):
                    i = s % len(windows)
                    plan.append((windows[i].start, windows[i].stop, i == 0))
                futures = [
                    client.submit(
                        worker.local_round,
                        template_f,
                        weights_f,
                        shard_opts[k],
                        shard,
                        states[k],
                        plan,
                        max_grad_norm,
                        key=f"rnnfast-l-{run}-{step}-{k}",
                        workers=placement[k],
                        allow_other_workers=True,
                    )
                    for k, shard in enumerate(shards)
                ]
                results = _gather(client, futures)
                del futures, weights_f
                update_start = time.perf_counter()
                flat = np.zeros_like(results[0][0])
                for (c0, c1), r in zip(columns, results, strict=True):
                    flat += r[0] * flat.dtype.type((c1 - c0) / batch_size)
                worker.set_flat_weights(params, flat)
                states = [r[2] for r in results]
                shard_opts = [r[3] for r in results]
                step_losses = [
                    sum(r[1][j][0] for r in results) / sum(r[1][j][1] for r in results)
                    for j in range(taken)
                ]
                compute = max(r[4] for r in results)
                new_tokens = sum((p[1] - p[0]) * batch_size for p in plan)
        except comm_errors as exc:
            raise lost(exc, step) from exc
        now = time.perf_counter()
        comm = max(0.0, (update_start - step_start) - compute)
        tokens += new_tokens
        stop = False
        for j, loss in enumerate(step_losses):
            losses.append(float(loss))
            if callback is not None:
                progress = DistributedProgress(
                    step + j + 1, float(loss), tokens, now - start, compute / taken, comm / taken
                )
                stop = bool(callback(progress)) or stop
        step += taken
        if checkpoint is not None and (step % checkpoint_every == 0 or step >= steps or stop):
            _save_checkpoint(checkpoint, model, opt, step, losses, states, shard_opts, columns)
            last_checkpoint[0] = step
        if stop:
            break
    for f in shards:
        f.release()
    return losses


# --------------------------------------------------------------------------------------------
# Inference


def predict_distributed(model: CharRNN | SequenceRegressor, sequences: Any, client: Any) -> Any:
    """Run ``model`` over many sequences on a Dask cluster; the model is sent once.

    Each sequence's output is what the model gives it alone, in eval mode from a fresh state:
    a SequenceRegressor's ``predict(sequence)``; a CharRNN's next-character logits (T, V) of a
    string or of token ids.

    Args:
        model: a CharRNN or SequenceRegressor (fitted).
        sequences: a ``dask.bag`` of sequences (any lengths), or a ``dask.array`` whose rows
            are sequences of one length (a SequenceRegressor's (n, T) or (n, T, input_size);
            a CharRNN's (n, T) token ids), chunked along the rows only.
        client: a ``distributed.Client``.

    Returns:
        For a bag, the list of outputs in the bag's order; for an array, the stacked outputs
        (n, T, ...) as a NumPy array.
    """
    distributed = _dask()
    import dask.array as da
    import dask.bag as db

    if not isinstance(model, CharRNN | SequenceRegressor):
        raise TypeError(f"model must be a CharRNN or a SequenceRegressor, got {type(model)}")
    if not isinstance(client, distributed.Client):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__}")
    [model_f] = client.scatter([worker.pack(model)], broadcast=True, hash=False)
    try:
        if isinstance(sequences, db.Bag):
            out = sequences.map_partitions(worker.predict_partition, model_f)
            return list(client.compute(out).result())
        if isinstance(sequences, da.Array):
            if sequences.ndim < 2:
                raise ValueError("a dask.array of sequences must be (n, T, ...): one row each")
            if any(len(c) > 1 for c in sequences.chunks[1:]):
                sequences = sequences.rechunk({i: -1 for i in range(1, sequences.ndim)})
            if isinstance(model, CharRNN):
                extra = {"new_axis": sequences.ndim}
                sample = np.zeros((1, *sequences.shape[1:], len(model.vocab)), model.dtype)
            else:
                extra = {}
                sample = np.zeros((1, *sequences.shape[1:]), np.float64)
            out = sequences.map_blocks(
                worker.predict_block, model_f, dtype=sample.dtype, meta=sample[:0], **extra
            )
            if isinstance(model, CharRNN):
                out = out.rechunk({out.ndim - 1: -1})
            return np.asarray(client.compute(out).result())
        raise TypeError(f"sequences must be a dask.bag or a dask.array, got {type(sequences)}")
    finally:
        model_f.release()
