"""Optimizers and gradient clipping over dicts of NumPy parameters and gradients.

An optimizer holds a mapping of parameters and a mapping of gradients with the same keys (a
module's ``parameters()`` and ``grads``, or any dicts of arrays) and updates the parameters in
place; the gradients are looked up at every ``step()``, so a dict whose arrays are replaced
between steps works too. The updates are PyTorch's (``torch.optim``), hyperparameter for
hyperparameter::

    opt = rnnfast.Adam(model.parameters(), model.grads, lr=1e-3)
    for batch in data:
        opt.zero_grad()
        loss, d = loss_fn(model(batch.x)[0], batch.y)
        model.backward(d)
        rnnfast.clip_grad_norm(model.grads, 5.0)
        opt.step()

``lr`` and the other hyperparameters are plain attributes, so a schedule sets ``opt.lr``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from rnnfast import _reference, functional
from rnnfast._validation import asarray, check_flag, check_nonnegative
from rnnfast.nn.module import FlatStore, find_store

__all__ = ["SGD", "Adagrad", "Adam", "Optimizer", "clip_grad_norm", "clip_grad_value"]


class Optimizer:
    """Base class: keeps the parameter and gradient mappings, the step count and per-parameter
    state; subclasses define ``_update``.

    Args:
        params: name -> parameter array (float, writable: it is updated in place).
        grads: name -> gradient array of the same shape, same keys as params.
        lr: learning rate, >= 0.
    """

    def __init__(
        self, params: Mapping[str, np.ndarray], grads: Mapping[str, Any], lr: float
    ) -> None:
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError(
                "params and grads must be mappings of name -> array, e.g. "
                "(model.parameters(), model.grads)"
            )
        if not params:
            raise ValueError("params is empty: nothing to optimize")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{name!r}] must be a float NumPy array, got {type(p)}")
            if not p.flags.writeable:
                raise ValueError(f"params[{name!r}] is read-only; it must be updated in place")
        if set(params) != set(grads):
            only_params, only_grads = set(params) - set(grads), set(grads) - set(params)
            raise ValueError(
                "params and grads must have the same keys: only in params "
                f"{sorted(only_params)}, only in grads {sorted(only_grads)}"
            )
        self.params = params
        self.grads = grads
        self.lr = check_nonnegative("lr", lr)
        self.steps = 0
        """Number of ``step()`` calls so far (PyTorch's per-parameter ``state["step"]``)."""
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in params}
        for name in params:
            self._grad(name)
        # Parameters and gradients that are exactly the views of one flat buffer each (a
        # model's, see nn.module.FlatStore): step() then updates the buffers whole, and the
        # per-parameter state arrays are views into the flat state.
        self._store = find_store(params, grads)
        self._flat_state: dict[str, np.ndarray] = {}
        self._flat_bound = False  # state[name] made views of the flat state

    def _grad(self, name: str) -> np.ndarray:
        g = asarray(f"grads[{name!r}]", self.grads[name])
        if g.shape != self.params[name].shape:
            raise ValueError(
                f"grads[{name!r}] has shape {g.shape}, but params[{name!r}] has shape "
                f"{self.params[name].shape}"
            )
        return g

    def zero_grad(self) -> None:
        """Set every gradient to zero, in place."""
        for name in self.params:
            self.grads[name][...] = 0

    def step(self) -> None:
        """Update every parameter in place from its current gradient."""
        self.steps += 1
        store = self._store
        if store is not None and store.covers(self.params, self.grads) and self._step_flat(store):
            return
        for name, p in self.params.items():
            self._update(p, self._grad(name).astype(p.dtype, copy=False), self.state[name])

    def _step_flat(self, store: FlatStore) -> bool:
        """One update of the whole flat buffer: elementwise the same operations, in the same
        order, as the per-parameter update, so the same numbers (the padding stays zero).
        False, having done nothing, when the per-parameter state cannot be gathered."""
        if not self._gather_state(store):
            return False
        flat = self._flat_state
        known = set(flat)
        n = store.size
        self._update_flat(store.params[:n], store.grads[:n], flat)
        if set(flat) != known or not self._flat_bound:
            # Each parameter's state: a view of its part of the flat state.
            for name, p in self.params.items():
                where = store.views[id(p)][2]
                self.state[name].update({k: v[where].reshape(p.shape) for k, v in flat.items()})
            self._flat_bound = True
        return True

    def _gather_state(self, store: FlatStore) -> bool:
        """Make the flat state hold what ``state`` says, which may have been replaced from
        outside (a checkpoint loaded into ``opt.state``) or made by per-parameter steps."""
        flat = self._flat_state
        if self._flat_bound and all(
            set(self.state[name]) == set(flat)
            and all(v.base is flat[k] for k, v in self.state[name].items())
            for name in self.params
        ):
            return True
        keys = {frozenset(self.state[name]) for name in self.params}
        if len(keys) != 1:  # some parameters have state and others not: per parameter
            return False
        n = store.size
        fresh = {k: np.zeros(n, dtype=store.dtype) for k in next(iter(keys))}
        for name, p in self.params.items():
            where = store.views[id(p)][2]
            for key, value in self.state[name].items():
                fresh[key][where] = np.asarray(value, dtype=store.dtype).reshape(-1)
        self._flat_state = fresh
        self._flat_bound = False
        return True

    def _update_flat(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        self._update(p, g, state)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def _decayed(self, p: np.ndarray, g: np.ndarray, weight_decay: float) -> np.ndarray:
        """The gradient with L2 weight decay added (never modifying g in place)."""
        return g + p.dtype.type(weight_decay) * p if weight_decay else g


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2
    weight decay; exactly ``torch.optim.SGD``::

        g = grad + weight_decay * p
        buf = g (first step), else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf        (when momentum > 0)
        p -= lr * g
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, grads, lr)
        self.momentum = check_nonnegative("momentum", momentum)
        self.dampening = check_nonnegative("dampening", dampening)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.nesterov = check_flag("nesterov", nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        g = self._decayed(p, g, self.weight_decay)
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= p.dtype.type(self.momentum)
                buf += p.dtype.type(1 - self.dampening) * g
            g = g + p.dtype.type(self.momentum) * buf if self.nesterov else buf
        p -= p.dtype.type(self.lr) * g


class Adagrad(Optimizer):
    """Adagrad, exactly ``torch.optim.Adagrad``::

        g = grad + weight_decay * p
        sum += g * g                       (sum starts at initial_accumulator_value)
        p -= lr / (1 + (step - 1) * lr_decay) * g / (sqrt(sum) + eps)

    This is PyTorch's update, not the one of the classic from-scratch NumPy char-RNN
    (min-char-rnn), which divides by ``sqrt(sum + 1e-8)``: the epsilon outside the square
    root, as here, moves a parameter whose gradients were all tiny by less (with eps=1e-10 and
    a first gradient g, PyTorch's step is ``lr * g / (|g| + 1e-10)``, min-char-rnn's
    ``lr * g / sqrt(g*g + 1e-8)``). To reproduce min-char-rnn exactly, keep its own loop.
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(params, grads, lr)
        self.lr_decay = check_nonnegative("lr_decay", lr_decay)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)
        self.initial_accumulator_value = check_nonnegative(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.eps = check_nonnegative("eps", eps)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        g = self._decayed(p, g, self.weight_decay)
        if "sum" not in state:
            state["sum"] = np.full_like(p, self.initial_accumulator_value)
        acc = state["sum"]
        acc += g * g
        clr = self.lr / (1 + (self.steps - 1) * self.lr_decay)
        p -= p.dtype.type(clr) * g / (np.sqrt(acc) + p.dtype.type(self.eps))


class Adam(Optimizer):
    """Adam with bias correction and optional L2 weight decay (not AdamW's decoupled one);
    exactly ``torch.optim.Adam``::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p -= lr * (m / (1 - beta1**step)) / (sqrt(v / (1 - beta2**step)) + eps)

    Examples:
        >>> params, grads = {"w": np.array([1.0, -1.0])}, {"w": np.array([0.5, -0.5])}
        >>> opt = Adam(params, grads, lr=0.1)
        >>> opt.step()  # the first step moves each parameter by lr against its gradient's sign
        >>> np.round(params["w"], 6)
        array([ 0.9, -0.9])
    """

    def __init__(
        self,
        params: Mapping[str, np.ndarray],
        grads: Mapping[str, Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, grads, lr)
        if len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (
            check_nonnegative("betas[0]", betas[0], 1),
            check_nonnegative("betas[1]", betas[1], 1),
        )
        self.eps = check_nonnegative("eps", eps)
        self.weight_decay = check_nonnegative("weight_decay", weight_decay)

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        g = self._decayed(p, g, self.weight_decay)
        beta1, beta2 = self.betas
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        _reference.adam_update(
            p, g, state["exp_avg"], state["exp_avg_sq"],
            *_reference.adam_constants(p.dtype, self.lr, beta1, beta2, self.eps, self.steps),
        )  # fmt: skip

    def _update_flat(self, p: np.ndarray, g: np.ndarray, state: dict[str, np.ndarray]) -> None:
        """``_update`` over the flat buffer in place, in one pass of the kernels (the
        reference's NumPy passes on its backend): the same operations in the same order."""
        if self.weight_decay:
            self._update(p, g, state)
            return
        if "exp_avg" not in state:
            state["exp_avg"] = np.zeros_like(p)
            state["exp_avg_sq"] = np.zeros_like(p)
        functional.adam_update(
            p, g, state["exp_avg"], state["exp_avg_sq"], lr=self.lr, betas=self.betas,
            eps=self.eps, step=self.steps,
        )  # fmt: skip


def _arrays(grads: Mapping[str, np.ndarray] | Iterable[np.ndarray]) -> list[np.ndarray]:
    """The gradient arrays of a mapping (its values) or an iterable; they must be ndarrays, as
    they are modified in place."""
    values = list(grads.values() if isinstance(grads, Mapping) else grads)
    for g in values:
        if not isinstance(g, np.ndarray):
            raise TypeError(f"gradients must be NumPy arrays (clipped in place), got {type(g)}")
    return values


def clip_grad_norm(
    grads: Mapping[str, np.ndarray] | Iterable[np.ndarray],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> float:
    """Scale all gradients together, in place, so that their joint norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: the norm is over all gradients concatenated; when it
    exceeds ``max_norm`` every gradient is multiplied by ``max_norm / (norm + 1e-6)``.

    Args:
        grads: a dict of gradient arrays (e.g. ``model.grads``) or an iterable of arrays.
        max_norm: the largest norm allowed.
        norm_type: p of the p-norm, > 0; ``math.inf`` or the string ``"inf"`` (as PyTorch
            takes) for the largest absolute value. Unlike PyTorch, a norm_type <= 0 is refused
            (a ValueError): for p < 0 the "norm" is dominated by the smallest gradient element,
            so it clips by nothing useful, and p = 0 counts non-zero elements.
        error_if_nonfinite: raise instead of clipping when the norm is NaN or infinite (then
            nothing is changed; otherwise the gradients become NaN, as in PyTorch). A NaN or
            Inf in any gradient counts, whatever the norm_type.

    An empty mapping or iterable returns 0.0 and changes nothing, as in PyTorch, but with a
    ``UserWarning`` (PyTorch is silent): it is usually an exhausted iterator or an empty dict
    passed by mistake.

    Returns:
        The total norm *before* clipping, as a float.

    Examples:
        >>> grads = {"w": np.array([3.0, 4.0])}
        >>> clip_grad_norm(grads, max_norm=1.0)
        5.0
        >>> np.round(grads["w"], 4)
        array([0.6, 0.8])
    """
    max_norm = check_nonnegative("max_norm", max_norm)
    if isinstance(norm_type, str):  # PyTorch takes float(norm_type): "inf", "2.0"
        try:
            norm_type = float(norm_type)
        except ValueError:
            raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None
    norm_type = check_nonnegative("norm_type", norm_type)
    if norm_type == 0:
        raise ValueError("norm_type must be > 0")
    error_if_nonfinite = check_flag("error_if_nonfinite", error_if_nonfinite)
    arrays = _arrays(grads)
    if not arrays:
        warnings.warn(
            "clip_grad_norm got no gradients (an empty dict or an exhausted iterator?): "
            "nothing is clipped and the norm is 0.0",
            UserWarning,
            stacklevel=2,
        )
        return 0.0
    if norm_type == math.inf:
        # np.max over the per-array maxima, not Python's max(): max() keeps its first
        # argument when a comparison with NaN is False, so a NaN after the first array
        # would be dropped.
        total = float(np.max([np.max(np.abs(g), initial=0.0) for g in arrays]))
    elif norm_type == 2:
        total = math.sqrt(sum(float(np.linalg.norm(g.ravel())) ** 2 for g in arrays))
    else:
        powers = (float(np.sum(np.abs(g.astype(np.float64)) ** norm_type)) for g in arrays)
        total = sum(powers) ** (1.0 / norm_type)
    if not math.isfinite(total) and error_if_nonfinite:
        raise RuntimeError(
            f"the total norm of order {norm_type} of the gradients is {total}, so they cannot "
            "be clipped; set error_if_nonfinite=False to clip anyway"
        )
    coef = max_norm / (total + 1e-6)
    if not coef >= 1.0:  # also when total is NaN: NaN gradients, as in PyTorch
        for g in arrays:
            g *= g.dtype.type(coef)
    return total


def clip_grad_value(
    grads: Mapping[str, np.ndarray] | Iterable[np.ndarray], clip_value: float
) -> None:
    """Clip every gradient element into [-clip_value, clip_value], in place
    (``torch.nn.utils.clip_grad_value_``).

    Examples:
        >>> grads = {"w": np.array([-3.0, 0.5, 2.0])}
        >>> clip_grad_value(grads, 1.0)
        >>> grads["w"]
        array([-1. ,  0.5,  1. ])
    """
    clip_value = check_nonnegative("clip_value", clip_value)
    for g in _arrays(grads):
        np.clip(g, -clip_value, clip_value, out=g)
