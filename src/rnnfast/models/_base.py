"""The ready-made models' shared base, and :func:`load_model`.

``CharRNN`` (a character-level language model) and ``SequenceRegressor`` (next-value prediction
for real-valued series).

Both are an input encoding, an :class:`rnnfast.RNN` and a :class:`rnnfast.Linear` decoder, train
with truncated BPTT (:func:`rnnfast.truncated_bptt`) and save to a single ``.npz`` file: a format
name and version, the configuration as JSON, model-specific arrays (the vocabulary, the
normalization) and the weights. Files are read with ``allow_pickle=False``, so loading a model
file can never run code, and every part is checked (a clear ``ValueError`` otherwise).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np

from rnnfast._validation import (
    check_choice,
    check_int,
    check_nonnegative,
    float_dtype,
)
from rnnfast.models._train import CrossEntropyStep, fit_windows
from rnnfast.models.file_format import (
    FORMAT_VERSION,
    array_to_text,
    read_npz,
    text_to_array,
    write_npz,
)
from rnnfast.nn import GRU, LSTM, RNN, Linear, Module, RNNBase
from rnnfast.nn.module import flat_parameters, parameter_budget
from rnnfast.train import (
    SGD,
    Adagrad,
    Adam,
    Optimizer,
    Progress,
    batchify,
    truncated_bptt,
)

__all__ = ["CELLS", "OPTIMIZERS", "load_model"]

_R = TypeVar("_R", bound="_RecurrentModel")

# Optimizer names accepted by fit, with their default learning rates.
OPTIMIZERS: dict[str, tuple[type[Optimizer], float]] = {
    "adam": (Adam, 2e-3),
    "adagrad": (Adagrad, 0.1),
    "sgd": (SGD, 1.0),
}


# What every model file's configuration holds about its RNN (_RecurrentModel._config); files
# of version 1 have no "cell" (they are all plain RNNs).
_RNN_CONFIG_KEYS = ("cell", "hidden_size", "num_layers", "nonlinearity", "dropout", "dtype")

CELLS = ("rnn", "lstm", "gru")
"""The recurrent cells a model can be built on: the Elman RNN, the LSTM and the GRU."""


def _recurrent_layer(
    cell: str,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    nonlinearity: str,
    dropout: float,
    dtype: np.dtype,
    rng: np.random.Generator,
    backend: str,
) -> RNNBase:
    """The model's recurrent layer for ``cell``.

    The three layers share one calling convention, so the models need nothing else per cell:
    ``output, state = layer(x, state)`` (state None for zeros; an LSTM's state is the pair
    ``(h_n, c_n)``, carried as one opaque value across truncated-BPTT windows), ``dx, _ =
    layer.backward(d_output)`` (no gradient flows into a window's initial state: the second
    result, ``dh0`` or ``(dh0, dc0)``, is dropped), and ``output_t, state = layer.step(x_t,
    state)`` for sampling.
    """
    cell = check_choice("cell", cell, CELLS)
    if cell == "rnn":
        return RNN(
            input_size,
            hidden_size,
            num_layers,
            nonlinearity,
            dropout=dropout,
            dtype=dtype,
            seed=rng,
            backend=backend,
        )
    if nonlinearity != "tanh":
        raise ValueError(f"nonlinearity applies to cell='rnn' only, got {nonlinearity!r}")
    layer = {"lstm": LSTM, "gru": GRU}[cell]
    return layer(
        input_size,
        hidden_size,
        num_layers,
        dropout=dropout,
        dtype=dtype,
        seed=rng,
        backend=backend,
    )


def _parameter_shapes(
    cell: str,
    input_size: Any,
    hidden_size: Any,
    num_layers: Any,
    output_size: Any,
    extra: list[tuple[int, ...]],
) -> list[tuple[int, ...]]:
    """The shapes of a model's parameters (one-directional layers with biases, the decoder,
    ``extra``), or none when the sizes are not valid yet (the layers then say why)."""
    try:
        G, H, L = {"rnn": 1, "lstm": 4, "gru": 3}[cell], int(hidden_size), int(num_layers)
        D, V = int(input_size), int(output_size)
    except (TypeError, ValueError):
        return []
    if min(G * H, D, V, L) < 1:
        return []
    shapes = []
    for layer in range(L):
        shapes += [(G * H, D if layer == 0 else H), (G * H, H), (G * H,), (G * H,)]
    return [*shapes, (V, H), (V,), *extra]


# The configuration is a small flat JSON object: bounded before parsing, so a hostile one costs
# neither a RecursionError nor time.
_MAX_CONFIG_BYTES = 1 << 16
_MAX_CONFIG_DEPTH = 4
_MAX_CONFIG_STRING = 64
_ENTRY_NAME = re.compile(r"(format|version|config|(extra|param)/[A-Za-z0-9_.]{1,100})")


def _json_depth(text: str) -> int:
    """How deeply the JSON text's arrays and objects nest (brackets inside strings skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_config(where: str, arr: np.ndarray) -> dict[str, Any]:
    if arr.size > _MAX_CONFIG_BYTES:
        raise ValueError(
            f"{where}: the configuration is {arr.size} bytes, more than {_MAX_CONFIG_BYTES}"
        )
    text = array_to_text("config", arr)
    if _json_depth(text) > _MAX_CONFIG_DEPTH:
        raise ValueError(f"{where}: the configuration nests deeper than {_MAX_CONFIG_DEPTH}")

    def no_constant(name: str) -> None:
        raise ValueError(f"{name} is not a number")

    try:
        return json.loads(text, parse_constant=no_constant)
    except ValueError as exc:  # JSONDecodeError, NaN/Infinity, an int of too many digits
        raise ValueError(f"{where}: the configuration is not valid JSON: {exc}") from None


def _check_config_against_weights(
    where: str, config: dict[str, Any], params: dict[str, np.ndarray]
) -> None:
    """What can be checked before building anything, whatever the keys: flat values only, and
    every number within what the stored weights could hold (no size larger than the largest
    stored dimension or the number of stored weights), every weight of the declared float
    dtype with finite values."""
    limit = max([len(params), *(max(v.shape, default=1) for v in params.values())])
    for key, value in config.items():
        if isinstance(value, str):
            if len(value) > _MAX_CONFIG_STRING:
                raise ValueError(f"{where}: configuration {key!r} is too long a string")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not abs(value) <= limit:
                raise ValueError(
                    f"{where}: configuration {key!r} = {value} is larger than the stored weights "
                    f"allow (at most {limit})"
                )
        elif value is not None and not isinstance(value, bool):
            raise ValueError(f"{where}: configuration {key!r} must be a number, string or bool")
    try:
        dtype = float_dtype(config.get("dtype"), "configuration 'dtype'")
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}") from None
    for key, value in params.items():
        if value.dtype != dtype:
            raise ValueError(f"{where}: weight {key!r} is {value.dtype}, expected {dtype}")
        if not np.isfinite(value).all():
            raise ValueError(f"{where}: weight {key!r} has non-finite values")


def make_optimizer(model: Module, optimizer: str | Optimizer, lr: float | None) -> Optimizer:
    """The optimizer ``fit`` trains ``model`` with: one of OPTIMIZERS by name (``lr`` None for
    its default), or a given Optimizer instance, checked to be over ``model.parameters()``."""
    if isinstance(optimizer, Optimizer):
        if lr is not None:
            raise ValueError("lr is the optimizer's: pass lr=None with an Optimizer instance")
        params = model.parameters()
        if set(optimizer.params) != set(params) or any(
            optimizer.params[k] is not v for k, v in params.items()
        ):
            raise ValueError("the optimizer must be built over this model's parameters()")
        return optimizer
    cls, default_lr = OPTIMIZERS[check_choice("optimizer", optimizer, tuple(OPTIMIZERS))]
    return cls(model.parameters(), model.grads, lr=default_lr if lr is None else lr)


class _RecurrentModel(Module):
    """An input encoding, a recurrent layer (RNN, LSTM or GRU) and a Linear decoder, trained
    with truncated BPTT and saved to one ``.npz``: what CharRNN and SequenceRegressor share.

    Subclasses define ``rnn_inputs`` (and ``_encode_backward`` if the encoding has parameters),
    ``_config``/``_extras``/``_from_file`` for model files, and the public ``fit``.
    """

    _FORMAT: ClassVar[str]
    _CONFIG_KEYS: ClassVar[tuple[str, ...]]
    _EXTRA_KEYS: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        rnn_input_size: int,
        hidden_size: int,
        num_layers: int,
        output_size: int,
        nonlinearity: str,
        dropout: float,
        dtype: Any,
        rng: np.random.Generator,
        backend: str,
        cell: str = "rnn",
    ) -> None:
        super().__init__()
        self.dtype = float_dtype(dtype)
        self.cell = check_choice("cell", cell, CELLS)
        shapes = _parameter_shapes(
            self.cell, rnn_input_size, hidden_size, num_layers, output_size, self._extra_shapes()
        )
        # Every parameter a view into one flat buffer (and every gradient into another): the
        # optimizers then update the model in a few vectorized passes (nn.module.FlatStore).
        with flat_parameters(shapes, self.dtype) as store:
            self._flat = store
            self.rnn: RNNBase = self._add_module(
                "rnn",
                _recurrent_layer(
                    self.cell,
                    rnn_input_size,
                    hidden_size,
                    num_layers,
                    nonlinearity,
                    dropout,
                    self.dtype,
                    rng,
                    backend,
                ),
            )
            # The Elman cell's activation ("tanh" or "relu"); the gated cells' is fixed, "tanh".
            self.nonlinearity: str = self.rnn.nonlinearity if self.cell == "rnn" else "tanh"
            self.decoder: Linear = self._add_module(
                "decoder", Linear(hidden_size, output_size, dtype=self.dtype, seed=rng)
            )
            self._add_encoding(rng)

    def _extra_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of the parameters ``_add_encoding`` adds (none by default)."""
        return []

    def _add_encoding(self, rng: np.random.Generator) -> None:
        """Add the input encoding's modules, if it has parameters (after the decoder: the
        initial weights draw from ``rng`` in that order)."""

    # The model as a SequenceModel (forward/backward over time-major windows).

    def rnn_inputs(self, x: Any) -> np.ndarray:
        """What the model's RNN reads for the inputs ``x`` (time-major): a CharRNN's token
        ids one-hot or embedded, a SequenceRegressor's values checked."""
        raise NotImplementedError

    def _encode_backward(self, d_encoded: np.ndarray) -> None:
        """Backward through the encoding (nothing to do without parameters)."""

    def forward(self, x: Any, h0: Any | None = None) -> tuple[np.ndarray, Any]:
        """Predictions for every step of x (T, B, ...), time-major, and the final state.

        Args:
            x: the inputs (T, B, ...).
            h0: the initial state, as the forward returns it, or None for zeros.

        Returns:
            (prediction (T, B, output_size), state): the state is h_n (num_layers, B,
            hidden_size), for an LSTM the pair (h_n, c_n).
        """
        output, h_n = self.rnn(self.rnn_inputs(x), h0)
        return self.decoder(output), h_n

    def backward(self, d_prediction: Any) -> None:
        """Add the gradients of the last forward into ``grads`` (none flows into h0)."""
        d_output = self.decoder.backward(d_prediction)
        d_encoded, _ = self.rnn.backward(d_output)
        self._encode_backward(d_encoded)

    def _step(self, x_t: np.ndarray, h: Any | None) -> tuple[np.ndarray, Any]:
        """One streaming step of encoded input x_t (B, ...): (prediction (B, output_size),
        new state)."""
        output, h = self.rnn.step(x_t, h)
        return self.decoder(output), h

    # Training.

    def _optimizer(self, optimizer: str | Optimizer, lr: float | None) -> Optimizer:
        return make_optimizer(self, optimizer, lr)

    def _fit(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        loss_fn: Callable[[np.ndarray, Any], tuple[float, np.ndarray]],
        *,
        steps: int,
        bptt: int,
        batch_size: int,
        lr: float | None,
        optimizer: str | Optimizer,
        callback: Callable[[Progress], bool | None] | None,
        max_grad_norm: float | None,
    ) -> list[float]:
        """Train on one long sequence (N, ...) with truncated BPTT over ``batch_size`` streams."""
        opt = self._optimizer(optimizer, lr)
        self.train()
        inputs, targets = batchify(inputs, batch_size), batchify(targets, batch_size)
        step = self._training_step(loss_fn)
        if step is None:
            result = truncated_bptt(
                self,
                inputs,
                targets,
                loss_fn,
                opt,
                bptt=bptt,
                steps=steps,
                max_grad_norm=max_grad_norm,
                callback=callback,
            )
            return result.losses
        # truncated_bptt's checks, before any work
        bptt = check_int("bptt", bptt, 1)
        steps = check_int("steps", steps, 0)
        if max_grad_norm is not None:
            max_grad_norm = check_nonnegative("max_grad_norm", max_grad_norm)
        return fit_windows(
            self,
            inputs,
            targets,
            step,
            opt,
            bptt=bptt,
            steps=steps,
            max_grad_norm=max_grad_norm,
            callback=callback,
        )

    def _training_step(self, loss_fn: Callable[..., Any]) -> CrossEntropyStep | None:
        """The fused training step for ``loss_fn`` (see models/_train.py), or None for the
        generic loop. Kept across fits: its buffers are reused."""
        return None

    # Model files.

    def _config(self) -> dict[str, Any]:
        """The configuration saved in a model file: the RNN's, then the model's own."""
        rnn = self.rnn
        config = {
            "cell": self.cell,
            "hidden_size": rnn.hidden_size,
            "num_layers": rnn.num_layers,
            "nonlinearity": self.nonlinearity,
            "dropout": rnn.dropout,
            "dtype": self.dtype.name,
        }
        return config | self._own_config()

    def _own_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _extras(self) -> dict[str, np.ndarray]:
        return {}

    @classmethod
    def _from_file(cls: type[_R], config: dict[str, Any], extras: dict[str, np.ndarray]) -> _R:
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model (configuration, its own arrays, weights) to one ``.npz`` file at
        exactly ``path``, replacing it atomically.

        Raises:
            ValueError: a weight is NaN or Inf (``load`` would refuse the file).
        """
        bad = [k for k, v in self.named_parameters() if not np.isfinite(v).all()]
        if bad:
            raise ValueError(f"weights {bad} have NaN or Inf values: load would refuse the file")
        arrays = {
            "format": text_to_array(self._FORMAT),
            "version": np.array(FORMAT_VERSION, dtype=np.int64),
            "config": text_to_array(json.dumps(self._config(), sort_keys=True)),
        }
        arrays |= {f"extra/{k}": v for k, v in self._extras().items()}
        arrays |= {f"param/{k}": v for k, v in self.named_parameters()}
        write_npz(path, arrays)

    @classmethod
    def load(cls: type[_R], path: str | os.PathLike[str]) -> _R:
        """Read a model written by ``save``; the model comes back in eval mode.

        The file is read with ``allow_pickle=False`` (it can never run code) and checked: its
        format name and version, the configuration, and every array's key, shape and dtype.

        Raises:
            FileNotFoundError: no such file.
            ValueError: anything else wrong, saying what (not a model file, another model's
                file, another format version, truncated or tampered content).
        """
        return load_model(path, (cls,))

    @classmethod
    def _from_arrays(cls: type[_R], where: str, arrays: dict[str, np.ndarray]) -> _R:
        """The model in a model file's arrays (format entry already read and removed)."""
        version = arrays.pop("version")
        if version.shape != () or version.dtype.kind not in "iu":
            raise ValueError(f"{where}: the version must be an integer scalar, got {version!r}")
        if not 1 <= int(version) <= FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {int(version)}, but this rnnfast reads version "
                f"{FORMAT_VERSION} (and the older ones)"
            )
        config = _parse_config(where, arrays.pop("config"))
        # Version 1 predates the gated cells: its configuration has no "cell", all are "rnn".
        keys = set(cls._CONFIG_KEYS) - ({"cell"} if int(version) == 1 else set())
        if not isinstance(config, dict) or set(config) != keys:
            raise ValueError(
                f"{where}: the configuration must have exactly the keys "
                f"{sorted(keys)}, got {config!r}"
            )
        extras = {k[6:]: v for k, v in arrays.items() if k.startswith("extra/")}
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
        unknown = [k for k in arrays if not k.startswith(("extra/", "param/"))]
        unknown += [f"extra/{k}" for k in extras if k not in cls._EXTRA_KEYS]
        missing = [f"extra/{k}" for k in cls._EXTRA_KEYS if k not in extras]
        if unknown or missing:
            raise ValueError(f"{where}: unexpected entries {unknown}, missing entries {missing}")
        _check_config_against_weights(where, config, params)
        try:
            # Building allocates no more weights than the file stores, whatever it claims.
            with parameter_budget(sum(v.size for v in params.values())):
                model = cls._from_file(config, extras)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{where}: invalid configuration or data: {exc}") from None
        expected = model.parameters()
        if set(params) != set(expected):
            raise ValueError(
                f"{where}: the weights do not match the configuration: missing "
                f"{sorted(set(expected) - set(params))}, unexpected "
                f"{sorted(set(params) - set(expected))}"
            )
        for key, value in params.items():
            want = expected[key]
            if value.shape != want.shape or value.dtype != want.dtype:
                raise ValueError(
                    f"{where}: weight {key!r} is {value.dtype} {value.shape}, "
                    f"expected {want.dtype} {want.shape}"
                )
        model.load_state_dict(params)
        return model.eval()


def load_model(path: str | os.PathLike[str], kinds: Iterable[type[_R]] | None = None) -> _R:
    """Read a model file as whichever model class its format names (the file read once).

    Args:
        path: a file written by a model's ``save``.
        kinds: the model classes to accept (e.g. ``(CharRNN,)``); None: every model class.

    Raises:
        FileNotFoundError: no such file.
        ValueError: anything else wrong, as in ``_RecurrentModel.load``; a model of another
            kind names the kind it holds.
    """
    where = repr(os.fspath(path))
    arrays = read_npz(path, _ENTRY_NAME.fullmatch)
    for key in ("format", "version", "config"):
        if key not in arrays:
            raise ValueError(f"{where} is not an rnnfast model file (no {key!r} entry)")
    fmt = array_to_text("format", arrays.pop("format"))
    kinds = tuple(_RecurrentModel.__subclasses__() if kinds is None else kinds)
    cls = next((k for k in kinds if k._FORMAT == fmt), None)
    if cls is None:
        wanted = " or ".join(repr(k._FORMAT) for k in kinds)
        raise ValueError(f"{where} holds a {fmt!r} model, not {wanted}")
    return cls._from_arrays(where, arrays)
