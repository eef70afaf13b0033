"""SequenceRegressor: next-value prediction for real-valued series."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rnnfast._validation import (
    Seed,
    as_float_array,
    check_int,
)
from rnnfast.models._base import _RNN_CONFIG_KEYS, _RecurrentModel
from rnnfast.train import (
    Optimizer,
    Progress,
    mse,
)

__all__ = ["SequenceRegressor"]


class SequenceRegressor(_RecurrentModel):
    """Next-value prediction for a real-valued series (the stock-price style task), trained
    with mean squared error.

    The series is standardized with the mean and standard deviation of the first ``fit``'s data
    (kept and saved with the model); ``predict`` takes and returns the series' own units, while
    ``forward``/``backward`` (the :class:`rnnfast.train.SequenceModel` interface that
    ``fit`` trains through) work on standardized, time-major (T, B, input_size) arrays.

    Args:
        input_size: features per step (1 for a plain series); the model predicts all of them.
        hidden_size, num_layers, nonlinearity, dropout: of the recurrent layer.
        cell: ``"rnn"`` (default), ``"lstm"`` or ``"gru"``, as :class:`CharRNN`.
        dtype, seed, backend: as :class:`CharRNN`.

    Examples:
        >>> series = np.sin(np.arange(400) * 0.1)
        >>> model = SequenceRegressor(hidden_size=8, seed=0)
        >>> result = model.fit(series, steps=5, bptt=20, batch_size=4)
        >>> pred = model.predict(series)  # pred[t] forecasts series[t + 1]
        >>> pred.shape == series.shape
        True
    """

    _FORMAT = "rnnfast.SequenceRegressor"
    _CONFIG_KEYS = (*_RNN_CONFIG_KEYS, "input_size")
    _EXTRA_KEYS = ("mean", "std")

    def __init__(
        self,
        input_size: int = 1,
        hidden_size: int = 32,
        num_layers: int = 1,
        *,
        cell: str = "rnn",
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        dtype: Any = np.float32,
        seed: Seed = None,
        backend: str = "auto",
    ) -> None:
        self.input_size = check_int("input_size", input_size, 1)
        super().__init__(
            self.input_size,
            hidden_size,
            num_layers,
            self.input_size,
            nonlinearity,
            dropout,
            dtype,
            np.random.default_rng(seed),
            backend,
            cell,
        )
        self.mean: np.ndarray | None = None
        """(input_size,) float64: the standardization's mean, set by the first fit."""
        self.std: np.ndarray | None = None
        """(input_size,) float64: the standardization's standard deviation."""

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}"

    def rnn_inputs(self, x: Any) -> np.ndarray:
        return as_float_array("x", x, self.dtype)

    def _series(self, series: Any) -> tuple[np.ndarray, bool]:
        """series (N,) (input_size 1) or (N, input_size) as float64 (N, input_size)."""
        arr = np.asarray(series, dtype=np.float64)
        flat = arr.ndim == 1
        if flat and self.input_size == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.input_size:
            raise ValueError(
                f"series must have shape (N, input_size) with input_size={self.input_size}"
                + (" or (N,)" if self.input_size == 1 else "")
                + f", got {np.shape(series)}"
            )
        if not np.isfinite(arr).all():
            raise ValueError("series must be finite (no NaN or Inf)")
        return arr, flat

    def _standardized(self, arr: np.ndarray) -> np.ndarray:
        if self.mean is None or self.std is None:
            raise RuntimeError("the model has not been fitted: call fit() first")
        return ((arr - self.mean) / self.std).astype(self.dtype)

    def fit(
        self,
        series: Any,
        steps: int = 500,
        bptt: int = 50,
        batch_size: int = 16,
        lr: float | None = None,
        optimizer: str | Optimizer = "adam",
        callback: Callable[[Progress], bool | None] | None = None,
        *,
        max_grad_norm: float | None = 5.0,
    ) -> list[float]:
        """Train to predict ``series[t + 1]`` from ``series[:t + 1]`` with truncated BPTT.

        Arguments as :meth:`CharRNN.fit`; ``series`` is (N,) or (N, input_size). The losses
        are the MSE of the standardized series (1.0 is as good as predicting the mean).
        """
        arr, _ = self._series(series)
        if len(arr) < 2:
            raise ValueError("series must have at least 2 steps")
        if self.mean is None:
            self.mean = arr.mean(axis=0)
            std = arr.std(axis=0)
            self.std = np.where(std > 0, std, 1.0)
        z = self._standardized(arr)
        return self._fit(
            z[:-1],
            z[1:],
            mse,
            steps=steps,
            bptt=bptt,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            callback=callback,
            max_grad_norm=max_grad_norm,
        )

    def predict(self, series: Any) -> np.ndarray:
        """One-step-ahead forecasts: ``pred[t]`` is the forecast of ``series[t + 1]`` from
        ``series[:t + 1]``, shaped like ``series`` (float64). Dropout is off (eval mode)."""
        arr, flat = self._series(series)
        z = self._standardized(arr)
        with self._evaluating():
            pred, _ = self.forward(z[:, None])
        out = pred[:, 0].astype(np.float64) * self.std + self.mean
        return out[:, 0] if flat else out

    @staticmethod
    def last_value_baseline(series: Any) -> np.ndarray:
        """The naive forecast to beat: the next value equals the last one (``pred[t] =
        series[t]``), shaped like ``series``."""
        return np.array(series, dtype=np.float64)

    def _own_config(self) -> dict[str, Any]:
        return {"input_size": self.input_size}

    def _extras(self) -> dict[str, np.ndarray]:
        if self.mean is None or self.std is None:
            raise RuntimeError("the model has not been fitted: there is nothing worth saving")
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def _from_file(cls, config: dict[str, Any], extras: dict[str, np.ndarray]) -> SequenceRegressor:
        model = cls(**config)
        for key in ("mean", "std"):
            value = extras[key]
            if value.dtype != np.float64 or value.shape != (model.input_size,):
                raise ValueError(f"{key} must be float64 ({model.input_size},), got {value.shape}")
            if not np.isfinite(value).all() or (key == "std" and not (value > 0).all()):
                raise ValueError(f"{key} has invalid values")
        model.mean, model.std = extras["mean"], extras["std"]
        return model
