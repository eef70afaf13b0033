"""The layers' base class: named parameters with gradients, sub-modules, state dicts,
train/eval mode, as ``torch.nn.Module`` has them (without autograd)."""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

import numpy as np

from rnnfast._validation import check_flag, to_numpy

__all__ = ["IncompatibleKeys", "Module", "parameter_budget"]

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
        param = _aligned_empty(value.shape, value.dtype)
        param[...] = value
        grad = _aligned_empty(value.shape, value.dtype)
        grad.fill(0)
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
