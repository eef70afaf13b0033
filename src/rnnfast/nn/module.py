"""The layers' base class: named parameters with gradients, sub-modules, state dicts,
train/eval mode, as ``torch.nn.Module`` has them (without autograd)."""

from __future__ import annotations

import contextlib
import contextvars
import math
import weakref
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rnnfast._validation import check_flag, to_numpy

__all__ = [
    "FlatStore",
    "IncompatibleKeys",
    "Module",
    "find_store",
    "flat_parameters",
    "parameter_budget",
]

_M = TypeVar("_M", bound="Module")

# Parameters start on a cache line: the streaming step's vector loads of a weight row then
# never straddle two lines. NumPy's own allocations are only 16-byte aligned; the step
# realigns the loads of rows of two or more whole lines itself but not the rest. Measure it
# with bench/experiments/step_dot.c (built as its header says): `./step_dot 32 128 -1 0`
# (aligned) against `./step_dot 32 128 -1 4` (16 bytes past a line).
PARAMETER_ALIGNMENT = 64


def _aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data starts at a PARAMETER_ALIGNMENT boundary."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(nbytes + PARAMETER_ALIGNMENT, dtype=np.uint8)
    start = -buffer.ctypes.data % PARAMETER_ALIGNMENT
    return buffer[start : start + nbytes].view(dtype).reshape(shape)


# Elements of parameters still allowed to be created in this context (None: no limit).
_budget: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "rnnfast_parameter_budget", default=None
)


@contextlib.contextmanager
def parameter_budget(elements: int) -> Iterator[None]:
    """Layers built inside may create at most ``elements`` parameter values in all, else
    ValueError before allocating: loading a model file builds at most what the file stores,
    whatever sizes its configuration claims."""
    token = _budget.set([int(elements)])
    try:
        yield
    finally:
        _budget.reset(token)


def _charge(shape: tuple[int, ...]) -> None:
    left = _budget.get()
    if left is not None:
        n = math.prod(int(s) for s in shape)
        if n > left[0]:
            raise ValueError("the configuration describes more weights than the file stores")
        left[0] -= n


class FlatStore:
    """One contiguous parameter buffer and one gradient buffer, of one dtype, that the
    parameters built inside :func:`flat_parameters` are views of (each starting on a
    PARAMETER_ALIGNMENT boundary; the padding between them stays zero in both buffers).

    An optimizer over exactly these parameters updates the whole buffer with a few vectorized
    operations instead of a loop over the parameters, and clipping takes one norm; an
    elementwise update of the zero padding leaves it zero (zero gradient, zero state).
    """

    def __init__(self, capacity: int, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)
        self.params = _aligned_empty((capacity,), self.dtype)
        self.params.fill(0)
        self.grads = _aligned_empty((capacity,), self.dtype)
        self.grads.fill(0)
        self.used = 0
        # id(param view) -> (param view, grad view, its place in the buffers)
        self.views: dict[int, tuple[np.ndarray, np.ndarray, slice]] = {}
        _stores[id(self.params.base)] = self

    def __getstate__(self) -> dict[str, Any]:
        # A pickle of the model holds its parameters as arrays of their own (NumPy does not
        # keep views across a pickle): the copy's store is empty, not a second copy of them.
        return {"dtype": self.dtype}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.dtype = state["dtype"]
        self.params = np.zeros(0, self.dtype)
        self.grads = np.zeros(0, self.dtype)
        self.used = 0
        self.views = {}

    def take(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray] | None:
        """(param, grad) views of a new parameter's place, or None: no room or another dtype."""
        n = math.prod(shape)
        if np.dtype(dtype) != self.dtype or self.used + n > self.params.size:
            return None
        where = slice(self.used, self.used + n)
        per_line = max(1, PARAMETER_ALIGNMENT // self.dtype.itemsize)
        self.used += -(-n // per_line) * per_line  # the next one starts on a line
        param, grad = self.params[where].reshape(shape), self.grads[where].reshape(shape)
        self.views[id(param)] = (param, grad, where)
        return param, grad

    @property
    def size(self) -> int:
        """Elements in use (parameters and padding): the part of the buffers to update."""
        return self.used

    def covers(self, params: Mapping[str, np.ndarray], grads: Mapping[str, Any]) -> bool:
        """Whether ``params`` and ``grads`` are exactly this store's views: every parameter it
        holds, each with its own gradient (so updating the whole buffer updates just them)."""
        if len(params) != len(self.views):
            return False
        for name, p in params.items():
            view = self.views.get(id(p))
            if view is None or view[0] is not p or grads.get(name) is not view[1]:
                return False
        return True


# The stores by id of the memory their parameter buffer views (a parameter's ``base``).
_stores: weakref.WeakValueDictionary[int, FlatStore] = weakref.WeakValueDictionary()


def find_store(params: Mapping[str, np.ndarray], grads: Mapping[str, Any]) -> FlatStore | None:
    """The :class:`FlatStore` whose views ``params`` and ``grads`` are exactly, or None."""
    first = next(iter(params.values()), None)
    if not isinstance(first, np.ndarray) or first.base is None:
        return None
    store = _stores.get(id(first.base))
    if store is None or store.params.base is not first.base or not store.covers(params, grads):
        return None
    return store


_store: contextvars.ContextVar[FlatStore | None] = contextvars.ContextVar(
    "rnnfast_flat_store", default=None
)


@contextlib.contextmanager
def flat_parameters(shapes: Iterable[tuple[int, ...]], dtype: Any) -> Iterator[FlatStore | None]:
    """Parameters built inside, of these ``shapes`` (in any order) and ``dtype``, are views
    into one :class:`FlatStore`; a parameter beyond its room or of another dtype is allocated
    apart as usual. No store (None) under a :func:`parameter_budget` the shapes exceed: the
    layers then refuse the configuration before anything large is allocated."""
    shapes = [tuple(int(n) for n in s) for s in shapes]
    sizes = [math.prod(s) for s in shapes]
    left = _budget.get()
    if left is not None and sum(sizes) > left[0]:
        yield None
        return
    per_line = max(1, PARAMETER_ALIGNMENT // np.dtype(dtype).itemsize)
    store = FlatStore(sum(-(-n // per_line) * per_line for n in sizes), np.dtype(dtype))
    token = _store.set(store)
    try:
        yield store
    finally:
        _store.reset(token)


def _uniform(rng: np.random.Generator, shape: tuple[int, ...], bound: float, dtype: np.dtype):
    """U(-bound, bound) drawn in float64 and cast, so both dtypes start from the same numbers."""
    _charge(shape)
    return rng.uniform(-bound, bound, shape).astype(dtype)


# --------------------------------------------------------------------------------------------
# Module: parameters, gradients, state dicts, train/eval


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` did not match."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Module:
    """Base of the layers: named parameters with gradients, sub-modules, train/eval mode.

    Parameter names are PyTorch's, and those of sub-modules are prefixed with the sub-module's
    name and a dot (``"rnn.weight_ih_l0"``), so a state dict of a composite model is flat.
    """

    def __init__(self) -> None:
        self.training = True
        self._parameters: dict[str, np.ndarray] = {}
        self._grads: dict[str, np.ndarray] = {}
        self._modules: dict[str, Module] = {}

    def _add_parameter(self, name: str, value: np.ndarray) -> np.ndarray:
        value = np.asarray(value)
        store = _store.get()
        views = None if store is None else store.take(value.shape, value.dtype)
        if views is None:
            param = _aligned_empty(value.shape, value.dtype)
            grad = _aligned_empty(value.shape, value.dtype)
            grad.fill(0)
        else:
            param, grad = views  # (the grad is zero already)
        param[...] = value
        self._parameters[name] = param
        self._grads[name] = grad
        return param

    def _add_module(self, name: str, module: _M) -> _M:
        self._modules[name] = module
        return module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError

    def _named(self, which: str, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        yield from ((prefix + k, v) for k, v in getattr(self, which).items())
        for name, module in self._modules.items():
            yield from module._named(which, f"{prefix}{name}.")

    def named_parameters(self) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) of every parameter, sub-modules' included; the arrays are live."""
        return self._named("_parameters")

    def parameters(self) -> dict[str, np.ndarray]:
        """Every parameter by name: the live arrays (what an optimizer updates in place)."""
        return dict(self._named("_parameters"))

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """The gradient of every parameter, with the keys and shapes of ``parameters()``; live
        arrays that ``backward`` adds into and ``zero_grad`` clears."""
        return dict(self._named("_grads"))

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place)."""
        for _, g in self._named("_grads"):
            g.fill(0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of every parameter by name (PyTorch's names, shapes and layout)."""
        return {k: v.copy() for k, v in self._named("_parameters")}

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True
    ) -> IncompatibleKeys:
        """Copy parameters in from ``state_dict`` (NumPy arrays, torch tensors, array-likes).

        Every key and shape is checked before anything is copied, so a failed load changes
        nothing. Values are cast to the layer's dtype (a float64 state dict loads into a float32
        layer). With ``strict=False`` missing and unexpected keys are allowed and returned.

        Raises:
            ValueError: ``strict`` and a key is missing or unexpected (all of them are named),
                or a value has the wrong shape or is not numeric.
        """
        strict = check_flag("strict", strict)
        params = self.parameters()
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            raise ValueError(
                f"Error(s) loading state_dict for {type(self).__name__}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        staged = {}
        for key, param in params.items():
            if key not in state_dict:
                continue
            value = np.asarray(to_numpy(state_dict[key]))
            if value.dtype.kind not in "fiu":
                raise ValueError(f"state_dict[{key!r}] must be numeric, got dtype {value.dtype}")
            if value.shape != param.shape:
                raise ValueError(
                    f"state_dict[{key!r}] has shape {value.shape}, "
                    f"but the parameter has shape {param.shape}"
                )
            staged[key] = value
        for key, value in staged.items():
            np.copyto(params[key], value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode (dropout on) for this module and its sub-modules; returns self."""
        self.training = check_flag("mode", mode)
        for module in self._modules.values():
            module.train(mode)
        return self

    def eval(self: _M) -> _M:
        """Set evaluation mode (dropout off); returns self."""
        return self.train(False)

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Evaluation mode inside the block, the previous mode restored after it."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        """PyTorch's layout: ``Name(extra_repr)``, sub-modules indented one per line."""
        lines = [
            f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()
        ]
        body = "\n".join([self.extra_repr(), *lines, ""]) if lines else self.extra_repr()
        return f"{type(self).__name__}({body})"
