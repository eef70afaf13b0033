"""The models' training step, designed as one piece rather than as the generic loop of
:func:`rnnfast.truncated_bptt` (which it equals, loss for loss, to rounding).

Per window of token ids, a step of a language model is: encode, the recurrent layer, the
decoder, softmax cross-entropy, the backward of all of it, clipping and the optimizer. Around
the recurrent kernels it does here:

- a one-layer recurrent layer reads the token ids themselves: its input projection is a
  gather of rows of ``table`` (``w_ih.T`` for one-hot input, ``E @ w_ih.T`` for an embedding
  E), and its backward returns the table's gradient (the gate gradients summed by id) instead
  of dx and a (T*B)-row dw_ih product (:func:`rnnfast.functional.gathered_forward`);
- otherwise the one-hot input is one buffer per window length, kept across steps: each step
  clears the previous window's ones and sets its own (T * B writes, not a (T, B, V)
  allocation);
- the decoder, the softmax and the cross-entropy gradient are one call
  (:func:`rnnfast.functional.linear_cross_entropy`): the logits are written once, into a buffer
  kept across steps, and turned in place into the gradient; the decoder's weight and bias
  gradients are written straight into their (zeroed) gradient arrays, and the gradient of the
  recurrent output into another kept buffer; the kernel shares the work with the helper
  thread of the time loops;
- the gradients are zeroed, clipped (one norm) and the optimizer steps over the model's one
  flat gradient buffer and one flat parameter buffer (:class:`rnnfast.nn.module.FlatStore`);
- NumPy's BLAS runs any product left to it on one thread (see :func:`_numpy_blas_serial`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from rnnfast import _threads, functional
from rnnfast.nn.module import FlatStore, find_store
from rnnfast.train import Optimizer, Progress, bptt_windows, clip_grad_norm
from rnnfast.train._windows import window_loop


class CrossEntropyStep:
    """The forward and backward of one window through ``model`` (a ``_RecurrentModel`` whose
    decoder outputs logits over classes) with the mean softmax cross-entropy: the loss, and
    the gradients added into ``model.grads`` (which the caller zeroes first)."""

    def __init__(self, model: Any, one_hot: bool) -> None:
        self.model = model
        self.one_hot = one_hot
        params, grads = model.decoder.parameters(), model.decoder.grads  # the live arrays
        self.weight, self.bias = params["weight"], params.get("bias")
        self.d_weight, self.d_bias = grads["weight"], grads.get("bias")
        self._buffers: dict[tuple[int, int], dict[str, Any]] = {}
        rnn = model.rnn
        # One layer, one direction, no projection: the layer reads the ids (_gathered_layer).
        self.gathered = rnn.num_layers == 1 and not rnn.bidirectional and not rnn.proj_size
        if self.gathered:
            embedding = getattr(model, "embedding", None) if not one_hot else None
            self.embedding = None if embedding is None else embedding.parameters()["weight"]
            self.d_embedding = None if embedding is None else embedding.grads["weight"]
            p, g = rnn.parameters(), rnn.grads
            self.layer = tuple(p.get(n) for n in _LAYER_NAMES)
            self.d_layer = tuple(g.get(n) for n in _LAYER_NAMES)
            w_ih = self.layer[0]
            V = w_ih.shape[1] if self.embedding is None else self.embedding.shape[0]
            self.table = np.empty((V, w_ih.shape[0]), w_ih.dtype)  # rows of the layer's input
            self.kept = functional.GatheredBuffers()  # the layer's arrays, kept across steps

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_buffers": {}}  # (scratch: not worth pickling)

    def _buffers_for(self, T: int, B: int) -> dict[str, Any]:
        buffers = self._buffers.get((T, B))
        if buffers is None:
            dtype = self.model.dtype
            V, H = self.weight.shape
            N = T * B
            buffers = self._buffers[(T, B)] = {
                "x": np.zeros((T, B, V), dtype) if self.one_hot else None,
                "ones": None,  # the flat positions of x's ones
                "row_starts": np.arange(N) * V,  # x's rows (t, b) in the flat x
                "logits": np.empty((V, N), dtype),  # (transposed: the softmax's gradient)
                "d_out": np.empty((T, B, H), dtype),
            }
        return buffers

    def _encode(self, ids: np.ndarray, buffers: dict[str, Any]) -> np.ndarray:
        if not self.one_hot:
            return self.model.rnn_inputs(ids)
        x = buffers["x"]
        flat = x.reshape(-1)
        if buffers["ones"] is not None:
            flat[buffers["ones"]] = 0
        ones = buffers["ones"] = buffers["row_starts"] + ids.reshape(-1)
        flat[ones] = 1
        return x

    def __call__(self, ids: np.ndarray, targets: np.ndarray, state: Any) -> tuple[float, Any]:
        """(loss, the final state) of the window ``ids`` (T, B) with ``targets`` (T, B)."""
        model = self.model
        T, B = ids.shape
        buf = self._buffers_for(T, B)
        if self.gathered:
            output, state, layer_backward = self._gathered_layer(ids, state)
        else:
            output, state = model.rnn(self._encode(ids, buf), state)
        N, H = T * B, output.shape[-1]
        # The decoder, the softmax and the loss's gradient in one call, into kept arrays; the
        # decoder's gradients were zeroed and it is their only source: written, not added.
        d_out = buf["d_out"]
        out = (buf["logits"], d_out.reshape(N, H), self.d_weight, self.d_bias)
        loss = functional.linear_cross_entropy(
            output.reshape(N, H), self.weight, self.bias, targets.reshape(N), out=out,
            backend=model.rnn.backend,
        ).loss  # fmt: skip
        if self.gathered:
            layer_backward(d_out)
        else:
            d_encoded, _ = model.rnn.backward(d_out)
            model._encode_backward(d_encoded)
        return loss, state

    def _gathered_layer(
        self, ids: np.ndarray, state: Any
    ) -> tuple[np.ndarray, Any, Callable[[np.ndarray], None]]:
        """The recurrent layer over ``ids`` from ``state``, as ``model.rnn`` on the encoded
        ids: (output, the final state, the backward from d_output, which writes the layer's
        and the embedding's gradients)."""
        rnn, cell = self.model.rnn, self.model.cell
        w_ih, w_hh, b_ih, b_hh = self.layer
        table = self.table
        if self.embedding is None:
            np.copyto(table, w_ih.T)
        else:
            np.matmul(self.embedding, w_ih.T, out=table)
        lstm = cell == "lstm"
        # the state carried from the last window: h_n (1, B, H), an LSTM's (h_n, c_n)
        h0 = c0 = None
        if state is not None:
            h0, c0 = (state[0][0], state[1][0]) if lstm else (state[0], None)
        nonlinearity = rnn.nonlinearity if cell == "rnn" else "tanh"
        out = functional.gathered_forward(
            cell, ids, table, h0, c0, w_hh, b_ih, b_hh, nonlinearity=nonlinearity,
            backend=rnn.backend, buffers=self.kept,
        )  # fmt: skip
        states = out.states
        final = tuple(s[-1:].copy() for s in states)

        def backward(d_output: np.ndarray) -> None:
            g = functional.gathered_backward(
                cell, d_output, None, ids, h0, c0, states, out.workspace, w_hh, b_hh,
                nonlinearity=nonlinearity, backend=rnn.backend, buffers=self.kept,
            )  # fmt: skip
            # The gradients were zeroed and this layer is their only source: written.
            d_ih, d_hh, d_bih, d_bhh = self.d_layer
            if self.embedding is None:
                np.copyto(d_ih, g.d_table.T)
            else:  # x = E[ids]: dw_ih = d_table.T @ E, dE = d_table @ w_ih
                np.matmul(g.d_table.T, self.embedding, out=d_ih)
                np.matmul(g.d_table, w_ih, out=self.d_embedding)
            np.copyto(d_hh, g.dw_hh)
            if d_bih is not None:
                np.copyto(d_bih, g.db_ih)
                np.copyto(d_bhh, g.db_hh)

        return states[0], (final if lstm else final[0]), backward


_LAYER_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


def fit_windows(
    model: Any,
    inputs: np.ndarray,
    targets: np.ndarray,
    step: CrossEntropyStep,
    optimizer: Optimizer,
    *,
    bptt: int,
    steps: int,
    max_grad_norm: float | None,
    callback: Callable[[Progress], bool | None] | None,
) -> list[float]:
    """:func:`rnnfast.truncated_bptt`'s loop (the same windows, epochs, state carried, clipping,
    callback and losses) with ``step`` for the forward and backward."""
    store: FlatStore | None = find_store(model.parameters(), model.grads)
    if store is None:  # parameters not in one flat buffer: per-array zeroing and clipping
        zero_grad: Callable[[], None] = model.zero_grad
        grads = model.grads
        clip = None if max_grad_norm is None else lambda: clip_grad_norm(grads, max_grad_norm)
    else:  # one fill, one dot
        flat_grads = store.grads[: store.size]
        zero_grad = functools.partial(flat_grads.fill, 0)
        clip = None if max_grad_norm is None else lambda: _clip_flat(flat_grads, max_grad_norm)
    with _numpy_blas_serial():
        losses, _ = window_loop(
            bptt_windows(inputs.shape[0], bptt),
            steps,
            inputs.shape[1],
            None,
            lambda w, state: step(inputs[w], targets[w], state),
            zero_grad,
            clip,
            optimizer.step,
            None if callback is None else lambda *progress: callback(Progress(*progress)),
        )
    return losses


@contextlib.contextmanager
def _numpy_blas_serial() -> Iterator[None]:
    """Every BLAS pool but the kernels' at one thread inside (restored after): NumPy's, which
    runs the decoder's products. Those are small (at most tens of millions of multiply-adds
    here), so a second thread saves little, while a second pool's threads, spinning after each
    call, compete with the kernels' threads for the cores, and on a loaded machine a product
    waiting for a descheduled thread takes 5-30 times longer (the median of 1,600 x 128 x 61
    products measured 5-33 ms on two threads against 1.3-3 ms on one, at load 11 on 2 cores;
    rnnfast._bench_train measures fit end to end). The kernels' own pool keeps its policy
    (rnnfast._threads); when NumPy shares that library, nothing is changed."""
    others = [(c, c.num_threads) for c in _other_blas_pools() if c.num_threads > 1]
    for c, _ in others:
        c.set_num_threads(1)
    try:
        yield
    finally:
        for c, n in others:
            c.set_num_threads(n)


@functools.cache
def _other_blas_pools() -> tuple[Any, ...]:
    """threadpoolctl's controllers of the BLAS pools other than the kernels' (found once: the
    libraries loaded by then; scanning them costs milliseconds)."""
    kernels_blas = _threads.blas_library()
    if kernels_blas is None:
        return ()
    try:
        from threadpoolctl import ThreadpoolController

        controllers = ThreadpoolController().lib_controllers
    except Exception:  # threadpoolctl missing or failing: leave the threads as they are
        return ()
    kernels_path = os.path.realpath(kernels_blas)
    return tuple(
        c
        for c in controllers
        if c.user_api == "blas" and os.path.realpath(c.filepath) != kernels_path
    )


def _clip_flat(g: np.ndarray, max_norm: float) -> None:
    """:func:`rnnfast.clip_grad_norm` (2-norm) over one flat gradient buffer: one dot."""
    total = math.sqrt(float(np.dot(g, g)))
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also when total is NaN: NaN gradients, as clip_grad_norm
        g *= g.dtype.type(coef)
