"""What the Dask workers of :mod:`rnnfast.distributed` run: pure functions of their arguments
(a model template, flat weights, a shard, a truncated-BPTT state), so that Dask can run any of
them again on another worker when one is lost. Nothing here imports Dask.

A *template* is the pair ``(model, optimizer)`` pickled once per fit into one ``bytes`` object
(Dask would serialize the items of a tuple one by one, and the optimizer would then hold other
arrays than the model); every worker thread keeps one private copy of it (:func:`_clone`) whose
weights each task overwrites, so a step costs no model construction and no thread ever shares
arrays with another.
"""

from __future__ import annotations

import copy
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from rnnfast.models import CharRNN, SequenceRegressor
from rnnfast.train import Optimizer, clip_grad_norm, mse, softmax_cross_entropy

__all__ = [
    "build_shard",
    "describe",
    "encoded",
    "flat_grads",
    "flat_weights",
    "grad_step",
    "hold",
    "load_sequence",
    "local_round",
    "pack",
    "predict_block",
    "predict_one",
    "predict_partition",
    "set_flat_weights",
]

_local = threading.local()


def pack(obj: Any) -> bytes:
    """``obj`` as one pickle (cloudpickle, Dask's own: a model that has run a forward pass
    keeps a reference to its backend module, which plain pickle refuses)."""
    import cloudpickle

    return cloudpickle.dumps(obj)


def _clone(template: bytes) -> Any:
    """This thread's own copy of the object pickled in ``template`` (unpickled once per
    template object)."""
    entry = getattr(_local, "entry", None)
    if entry is None or entry[0] is not template:
        import cloudpickle

        entry = (template, cloudpickle.loads(template))
        _local.entry = entry  # the previous fit's copy is dropped
    return entry[1]


def hold(value: Any) -> Any:
    """The identity: a task whose result is its argument, so Dask keeps it (and can rebuild
    it from the task) on a worker."""
    return value


def flat_weights(model: Any) -> np.ndarray:
    """Every parameter of ``model`` in one vector, in ``parameters()`` order."""
    return np.concatenate([p.ravel() for p in model.parameters().values()])


def flat_grads(model: Any) -> np.ndarray:
    """Every gradient of ``model`` in one vector, in ``parameters()`` order."""
    grads = model.grads
    return np.concatenate([grads[k].ravel() for k in model.parameters()])


def set_flat_weights(arrays: dict[str, np.ndarray], flat: np.ndarray) -> None:
    """Copy a flat vector into the arrays (in place, in order)."""
    offset = 0
    for a in arrays.values():
        a[...] = flat[offset : offset + a.size].reshape(a.shape)
        offset += a.size
    if offset != flat.size:
        raise ValueError(f"flat vector of {flat.size} values for {offset} parameters")


def _loss_fn(model: Any) -> Callable[..., tuple[Any, np.ndarray]]:
    return softmax_cross_entropy if isinstance(model, CharRNN) else mse


def load_sequence(model: Any, source: Any) -> Any:
    """The raw data of ``source``: a callable's result, or a path's contents (UTF-8 text for a
    CharRNN; a ``.npy`` array, else whitespace-separated numbers, for a SequenceRegressor)."""
    if callable(source):
        return source()
    path = os.fspath(source)
    if isinstance(model, CharRNN):
        with open(path, encoding="utf-8") as f:
            return f.read()
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False)
    return np.loadtxt(path, dtype=np.float64)


def describe(template: Any, source: Any) -> dict[str, Any]:
    """Check the data as ``fit`` does and say what the client needs to plan the shards: the
    length of the encoded sequence, and a SequenceRegressor's standardization (that of the
    whole series, as ``fit`` computes it when the model has none yet)."""
    model = _clone(template)[0]
    data = load_sequence(model, source)
    if isinstance(model, SequenceRegressor):
        mean, std = model.mean, model.std
        try:
            model.fit(data, steps=0)  # checks the series; sets mean/std if the model has none
            return {"length": len(np.asarray(data)), "mean": model.mean, "std": model.std}
        finally:
            model.mean, model.std = mean, std
    model.fit(data, steps=0)
    return {"length": len(data)}


def encoded(model: Any, data: Any) -> np.ndarray:
    """The sequence the model trains on: a CharRNN's token ids, a SequenceRegressor's series
    standardized in the model's dtype (exactly as ``fit`` computes them)."""
    if isinstance(model, CharRNN):
        return model.encode(data)
    arr = np.asarray(data, dtype=np.float64)
    arr = arr.reshape(arr.shape[0], model.input_size)
    return ((arr - model.mean) / model.std).astype(model.dtype)


def build_shard(
    template: Any, source: Any, rows: int, c0: int, c1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shard ``[c0, c1)`` of the global batch: columns c0..c1-1 of ``batchify(inputs, B)``
    and of the targets, as (rows, c1 - c0, ...) contiguous arrays.

    ``source`` is either the encoded slice ``seq[c0 * rows : c1 * rows + 1]`` itself or a
    callable/path the worker reads (then encoded here and sliced)."""
    model = _clone(template)[0]
    if isinstance(source, np.ndarray):
        seq = source
    else:
        seq = encoded(model, load_sequence(model, source))[c0 * rows : c1 * rows + 1]
    b = c1 - c0
    x = seq[: b * rows].reshape(b, rows, *seq.shape[1:]).swapaxes(0, 1)
    y = seq[1 : b * rows + 1].reshape(b, rows, *seq.shape[1:]).swapaxes(0, 1)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def grad_step(
    template: Any,
    weights: np.ndarray,
    shard: tuple[np.ndarray, np.ndarray],
    state: Any,
    window: tuple[int, int],
    total: int,
) -> tuple[np.ndarray, float, Any, float]:
    """One window of one shard: (gradient of the *global* mean loss restricted to this shard,
    this shard's loss sum, the final state, seconds of compute).

    The loss gradient is divided by ``total``, the element count of the whole global window,
    before the backward pass, exactly as ``fit``'s mean does: the shards' gradients then add
    up to the single-process gradient."""
    start = time.perf_counter()
    model = _clone(template)[0]
    set_flat_weights(model.parameters(), weights)
    x, y = shard[0][window[0] : window[1]], shard[1][window[0] : window[1]]
    model.train()
    model.zero_grad()
    prediction, h_n = model.forward(x, state)
    loss_sum, d_prediction = _loss_fn(model)(prediction, y, reduction="sum")
    d_prediction /= d_prediction.dtype.type(total)
    model.backward(d_prediction)
    return flat_grads(model), float(loss_sum), h_n, time.perf_counter() - start


def local_round(
    template: Any,
    weights: np.ndarray,
    opt_state: tuple[int, dict[str, dict[str, np.ndarray]]] | None,
    shard: tuple[np.ndarray, np.ndarray],
    state: Any,
    windows: list[tuple[int, int, bool]],
    max_grad_norm: float | None,
) -> tuple[np.ndarray, list[tuple[float, int]], Any, Any, float]:
    """K local steps of one shard from ``weights`` (local SGD): each window's mean loss on the
    shard, its gradient clipped and a step of the shard's own optimizer (whose state comes in
    and goes out). Returns (weights, [(loss sum, count)] per step, state, optimizer state,
    seconds of compute); ``windows`` are (start, stop, starts_an_epoch)."""
    start = time.perf_counter()
    model, opt = _clone(template)
    set_flat_weights(model.parameters(), weights)
    _set_optimizer_state(opt, opt_state)
    loss_fn = _loss_fn(model)
    model.train()
    grads = model.grads
    losses = []
    for w0, w1, reset in windows:
        if reset:
            state = None
        model.zero_grad()
        prediction, h_n = model.forward(shard[0][w0:w1], state)
        loss_sum, d_prediction = loss_fn(prediction, shard[1][w0:w1], reduction="sum")
        d_prediction /= d_prediction.dtype.type(d_prediction.size // _per_element(model))
        model.backward(d_prediction)
        if max_grad_norm is not None:
            clip_grad_norm(grads, max_grad_norm)
        opt.step()
        state = h_n
        losses.append((float(loss_sum), d_prediction.size // _per_element(model)))
    out = (opt.steps, copy.deepcopy(opt.state))
    return flat_weights(model), losses, state, out, time.perf_counter() - start


def _per_element(model: Any) -> int:
    """Prediction values per loss element: a CharRNN's logits per target, 1 for the MSE."""
    return len(model.vocab) if isinstance(model, CharRNN) else 1


def _set_optimizer_state(opt: Optimizer, saved: Any) -> None:
    if saved is None:
        opt.steps = 0
        opt.state = {name: {} for name in opt.params}
    else:
        opt.steps = int(saved[0])
        opt.state = copy.deepcopy(saved[1])


def predict_one(model: Any, sequence: Any) -> np.ndarray:
    """The output of one sequence, in eval mode from a fresh state: a SequenceRegressor's
    ``predict``; a CharRNN's next-character logits (T, V) of a string or of token ids."""
    if isinstance(model, SequenceRegressor):
        return model.predict(sequence)
    ids = model.encode(sequence) if isinstance(sequence, str) else np.asarray(sequence)
    was_training = model.training
    model.eval()
    try:
        logits, _ = model.forward(ids[:, None])
    finally:
        model.train(was_training)
    return logits[:, 0]


def predict_partition(sequences: Any, model: Any) -> list[np.ndarray]:
    """:func:`predict_one` of every sequence of a bag partition (this thread's model copy)."""
    local = _clone(model)
    return [predict_one(local, s) for s in sequences]


def predict_block(block: np.ndarray, model: Any) -> np.ndarray:
    """:func:`predict_one` of every row of a dask.array block, stacked."""
    local = _clone(model)
    return (
        np.stack([predict_one(local, row) for row in block])
        if len(block)
        else np.empty((0,), dtype=np.float64)
    )
