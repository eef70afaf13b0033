"""``Linear``, ``Embedding`` and ``one_hot``: the layers around a recurrence."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from rnnfast._validation import (
    Seed,
    as_float_array,
    as_ids,
    check_flag,
    check_int,
    check_shape,
    float_dtype,
)
from rnnfast.nn.module import Module, _charge, _uniform

__all__ = ["Embedding", "Linear", "one_hot"]


# --------------------------------------------------------------------------------------------
# Linear, Embedding, one_hot


class Linear(Module):
    """``y = x @ weight.T + bias``: ``torch.nn.Linear`` on NumPy arrays.

    weight (out_features, in_features) and bias (out_features,) start U(-1/sqrt(in_features),
    1/sqrt(in_features)), PyTorch's default. x is (..., in_features); y (..., out_features).
    ``backward(d_y)`` returns dL/dx and adds into ``grads``; it reads the x of the last call,
    which must not be changed in place in between.

    Examples:
        >>> linear = Linear(3, 2, seed=0)
        >>> y = linear(np.ones((4, 3), np.float32))
        >>> y.shape
        (4, 2)
        >>> dx = linear.backward(np.ones_like(y))
        >>> dx.shape, linear.grads["weight"].shape
        ((4, 3), (2, 3))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: Any = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.bias = check_flag("bias", bias)
        self.dtype = float_dtype(dtype)
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(self.in_features)
        shape = (self.out_features, self.in_features)
        self._add_parameter("weight", _uniform(rng, shape, bound, self.dtype))
        if self.bias:
            self._add_parameter("bias", _uniform(rng, (self.out_features,), bound, self.dtype))
        self._x: np.ndarray | None = None

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}" + (
            "" if self.bias else ", bias=False"
        )

    def forward(self, x: Any) -> np.ndarray:
        """y (..., out_features) for x (..., in_features)."""
        x = as_float_array("x", x, self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., in_features) with in_features={self.in_features}, "
                f"got {x.shape}"
            )
        self._x = x
        # One 2-D GEMM: NumPy runs (T, B, in) @ (in, out) as T products, about 4x slower here.
        y = (x.reshape(-1, self.in_features) @ self._parameters["weight"].T).reshape(
            *x.shape[:-1], self.out_features
        )
        if self.bias:
            y += self._parameters["bias"]
        return y

    def backward(self, d_y: Any) -> np.ndarray:
        """dL/dx from dL/dy (shaped like the last output)."""
        if self._x is None:
            raise RuntimeError("backward() needs a forward() first")
        x = self._x
        d_y = as_float_array("d_y", d_y, self.dtype)
        check_shape("d_y", d_y, (*x.shape[:-1], self.out_features), meaning="the output's shape")
        d2 = d_y.reshape(-1, self.out_features)
        self._grads["weight"] += d2.T @ x.reshape(-1, self.in_features)
        if self.bias:
            self._grads["bias"] += d2.sum(axis=0)
        return (d2 @ self._parameters["weight"]).reshape(*x.shape[:-1], self.in_features)


class Embedding(Module):
    """A lookup table ``weight[ids]``: ``torch.nn.Embedding`` on NumPy arrays.

    weight (num_embeddings, embedding_dim) starts N(0, 1) (PyTorch's default); the row of
    ``padding_idx``, if given, starts at zero and never receives a gradient. ids are integers in
    [0, num_embeddings) of any shape; the output is ``(*ids.shape, embedding_dim)``.
    ``backward(d_out)`` adds into ``grads`` (ids have no gradient) and returns None.

    Examples:
        >>> embedding = Embedding(10, 3, padding_idx=0, seed=0)
        >>> vectors = embedding(np.array([[0, 4], [7, 0]]))
        >>> vectors.shape, bool((vectors[0, 0] == 0).all())
        ((2, 2, 3), True)
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: Any = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = check_int("num_embeddings", num_embeddings, 1)
        self.embedding_dim = check_int("embedding_dim", embedding_dim, 1)
        if padding_idx is not None:
            padding_idx = check_int("padding_idx", padding_idx, -self.num_embeddings)
            if padding_idx >= self.num_embeddings:
                raise ValueError(
                    f"padding_idx must be in [-{num_embeddings}, {num_embeddings}), "
                    f"got {padding_idx}"
                )
            padding_idx %= self.num_embeddings
        self.padding_idx = padding_idx
        self.dtype = float_dtype(dtype)
        rng = np.random.default_rng(seed)
        _charge((self.num_embeddings, self.embedding_dim))
        weight = rng.standard_normal((self.num_embeddings, self.embedding_dim)).astype(self.dtype)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self._add_parameter("weight", weight)
        self._ids: np.ndarray | None = None

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        return s + ("" if self.padding_idx is None else f", padding_idx={self.padding_idx}")

    def forward(self, ids: Any) -> np.ndarray:
        """The rows of ``weight`` for integer ``ids`` of any shape: ``(*ids.shape, dim)``."""
        ids = as_ids("ids", ids, self.num_embeddings)
        self._ids = ids
        return self._parameters["weight"][ids]

    def backward(self, d_out: Any) -> None:
        """Add dL/dweight for dL/d(output) ``d_out`` into ``grads`` (each id's rows summed)."""
        if self._ids is None:
            raise RuntimeError("backward() needs a forward() first")
        ids = self._ids
        d_out = as_float_array("d_out", d_out, self.dtype)
        check_shape("d_out", d_out, (*ids.shape, self.embedding_dim), meaning="the output's shape")
        flat_ids = ids.reshape(-1)
        flat_d = d_out.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = flat_ids != self.padding_idx
            flat_ids, flat_d = flat_ids[keep], flat_d[keep]
        np.add.at(self._grads["weight"], flat_ids, flat_d)


def one_hot(ids: Any, num_classes: int, dtype: Any = np.float32) -> np.ndarray:
    """``(*ids.shape, num_classes)`` with a 1 at each id: the RNN input for token ids.

    Unlike ``torch.nn.functional.one_hot`` the result is float (float32 by default), ready for an
    RNN, and ``num_classes`` is required.

    Raises:
        TypeError: ids are not integers.
        ValueError: an id outside [0, num_classes).

    Examples:
        >>> one_hot([2, 0], 3)
        array([[0., 0., 1.],
               [1., 0., 0.]], dtype=float32)
    """
    num_classes = check_int("num_classes", num_classes, 1)
    ids = as_ids("ids", ids, num_classes)
    out = np.zeros((*ids.shape, num_classes), dtype=float_dtype(dtype))
    np.put_along_axis(out, ids[..., None], 1, axis=-1)
    return out
