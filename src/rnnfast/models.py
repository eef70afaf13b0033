"""Ready-made models: ``CharRNN`` (a character-level language model) and ``SequenceRegressor``
(next-value prediction for real-valued series).

Both are an input encoding, an :class:`rnnfast.RNN` and a :class:`rnnfast.Linear` decoder, train
with truncated BPTT (:func:`rnnfast.truncated_bptt`) and save to a single ``.npz`` file: a format
name and version, the configuration as JSON, model-specific arrays (the vocabulary, the
normalization) and the weights. Files are read with ``allow_pickle=False``, so loading a model
file can never run code, and every part is checked (a clear ``ValueError`` otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import numpy as np

from rnnfast.losses import mse, softmax_cross_entropy
from rnnfast.nn import (
    RNN,
    Embedding,
    Linear,
    Module,
    Seed,
    _as_float_array,
    _check_choice,
    _check_finite_nonnegative,
    _check_int,
    _float_dtype,
    one_hot,
)
from rnnfast.optim import SGD, Adagrad, Adam, Optimizer
from rnnfast.training import Progress, batchify, truncated_bptt

__all__ = ["FORMAT_VERSION", "CharRNN", "SequenceRegressor"]

FORMAT_VERSION = 1
"""Version of the model file layout written by ``save``; ``load`` reads exactly this one."""

_R = TypeVar("_R", bound="_RecurrentModel")

# Optimizer names accepted by fit, with their default learning rates.
OPTIMIZERS: dict[str, tuple[type[Optimizer], float]] = {
    "adam": (Adam, 2e-3),
    "adagrad": (Adagrad, 0.1),
    "sgd": (SGD, 1.0),
}


# --------------------------------------------------------------------------------------------
# Model files


def _text_to_array(text: str) -> np.ndarray:
    """A string as a uint8 array of its UTF-8 bytes (a plain, pickle-free npz entry)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).copy()


def _array_to_text(name: str, arr: np.ndarray) -> str:
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ValueError(f"entry {name!r} must be a 1-D uint8 array, got {arr.dtype} {arr.shape}")
    try:
        return arr.tobytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"entry {name!r} is not UTF-8 text: {exc}") from None


def _write_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to exactly ``path`` (no ``.npz`` appended), atomically: a crash never
    leaves a half-written model file behind."""
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex}.tmp"  # beside path, for os.replace
    try:
        with open(tmp, "xb") as f:  # created with the usual permissions (umask)
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, read with ``allow_pickle=False``.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: the file cannot be opened.
        ValueError: the file is not a readable npz archive (truncated, corrupted, a pickle...).
    """
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not an .npz archive")
        with loaded:
            return {name: loaded[name] for name in loaded.files}
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as exc:  # whatever zipfile, zlib or np.lib.format fail with
        raise ValueError(
            f"{os.fspath(path)!r} is not a readable rnnfast model file: {exc}"
        ) from exc


# What every model file's configuration holds about its RNN (_RecurrentModel._config).
_RNN_CONFIG_KEYS = ("hidden_size", "num_layers", "nonlinearity", "dropout", "dtype")


class _RecurrentModel(Module):
    """An input encoding, an RNN and a Linear decoder, trained with truncated BPTT and saved to
    one ``.npz``: what CharRNN and SequenceRegressor share.

    Subclasses define ``_encode`` (and ``_encode_backward`` if the encoding has parameters),
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
    ) -> None:
        super().__init__()
        self.dtype = _float_dtype(dtype)
        self.rnn: RNN = self._add_module(
            "rnn",
            RNN(
                rnn_input_size,
                hidden_size,
                num_layers,
                nonlinearity,
                dropout=dropout,
                dtype=self.dtype,
                seed=rng,
                backend=backend,
            ),
        )
        self.decoder: Linear = self._add_module(
            "decoder", Linear(hidden_size, output_size, dtype=self.dtype, seed=rng)
        )

    # The model as a SequenceModel (forward/backward over time-major windows).

    def _encode(self, x: Any) -> np.ndarray:
        raise NotImplementedError

    def _encode_backward(self, d_encoded: np.ndarray) -> None:
        """Backward through the encoding (nothing to do without parameters)."""

    def forward(self, x: Any, h0: Any | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Predictions for every step of x (T, B, ...), time-major, and the final states.

        Returns:
            (prediction (T, B, output_size), h_n (num_layers, B, hidden_size)).
        """
        output, h_n = self.rnn(self._encode(x), h0)
        return self.decoder(output), h_n

    def backward(self, d_prediction: Any) -> None:
        """Add the gradients of the last forward into ``grads`` (none flows into h0)."""
        d_output = self.decoder.backward(d_prediction)
        d_encoded, _ = self.rnn.backward(d_output)
        self._encode_backward(d_encoded)

    def _step(self, x_t: np.ndarray, h: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One streaming step of encoded input x_t (B, ...): (prediction (B, output_size),
        new state)."""
        output, h = self.rnn.step(x_t, h)
        return self.decoder(output), h

    # Training.

    def _optimizer(self, optimizer: str | Optimizer, lr: float | None) -> Optimizer:
        if isinstance(optimizer, Optimizer):
            if lr is not None:
                raise ValueError("lr is the optimizer's: pass lr=None with an Optimizer instance")
            params = self.parameters()
            if set(optimizer.params) != set(params) or any(
                optimizer.params[k] is not v for k, v in params.items()
            ):
                raise ValueError("the optimizer must be built over this model's parameters()")
            return optimizer
        cls, default_lr = OPTIMIZERS[_check_choice("optimizer", optimizer, tuple(OPTIMIZERS))]
        return cls(self.parameters(), self.grads, lr=default_lr if lr is None else lr)

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
        result = truncated_bptt(
            self,
            batchify(inputs, batch_size),
            batchify(targets, batch_size),
            loss_fn,
            opt,
            bptt=bptt,
            steps=steps,
            max_grad_norm=max_grad_norm,
            callback=callback,
        )
        return result.losses

    # Model files.

    def _config(self) -> dict[str, Any]:
        """The configuration saved in a model file: the RNN's, then the model's own."""
        rnn = self.rnn
        config = {
            "hidden_size": rnn.hidden_size,
            "num_layers": rnn.num_layers,
            "nonlinearity": rnn.nonlinearity,
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
        exactly ``path``, replacing it atomically."""
        arrays = {
            "format": _text_to_array(self._FORMAT),
            "version": np.array(FORMAT_VERSION, dtype=np.int64),
            "config": _text_to_array(json.dumps(self._config(), sort_keys=True)),
        }
        arrays |= {f"extra/{k}": v for k, v in self._extras().items()}
        arrays |= {f"param/{k}": v for k, v in self.named_parameters()}
        _write_npz(path, arrays)

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
        return _load_any(path, (cls,))

    @classmethod
    def _from_arrays(cls: type[_R], where: str, arrays: dict[str, np.ndarray]) -> _R:
        """The model in a model file's arrays (format entry already read and removed)."""
        version = arrays.pop("version")
        if version.shape != () or version.dtype.kind not in "iu":
            raise ValueError(f"{where}: the version must be an integer scalar, got {version!r}")
        if int(version) != FORMAT_VERSION:
            raise ValueError(
                f"{where} has format version {int(version)}, but this rnnfast reads version "
                f"{FORMAT_VERSION}"
            )
        try:
            config = json.loads(_array_to_text("config", arrays.pop("config")))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: the configuration is not valid JSON: {exc}") from None
        if not isinstance(config, dict) or set(config) != set(cls._CONFIG_KEYS):
            raise ValueError(
                f"{where}: the configuration must have exactly the keys "
                f"{sorted(cls._CONFIG_KEYS)}, got {config!r}"
            )
        extras = {k[6:]: v for k, v in arrays.items() if k.startswith("extra/")}
        params = {k[6:]: v for k, v in arrays.items() if k.startswith("param/")}
        unknown = [k for k in arrays if not k.startswith(("extra/", "param/"))]
        unknown += [f"extra/{k}" for k in extras if k not in cls._EXTRA_KEYS]
        missing = [f"extra/{k}" for k in cls._EXTRA_KEYS if k not in extras]
        if unknown or missing:
            raise ValueError(f"{where}: unexpected entries {unknown}, missing entries {missing}")
        try:
            model = cls._from_file(config, extras)
        except (TypeError, ValueError) as exc:
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
            if not np.isfinite(value).all():
                raise ValueError(f"{where}: weight {key!r} has non-finite values")
        model.load_state_dict(params)
        return model.eval()


def _load_any(path: str | os.PathLike[str], kinds: Iterable[type[_R]]) -> _R:
    """Read a model file as whichever of ``kinds`` its format names (the file read once).

    Raises:
        FileNotFoundError: no such file.
        ValueError: anything else wrong, as in ``_RecurrentModel.load``; a model of another
            kind names the kind it holds.
    """
    where = repr(os.fspath(path))
    arrays = _read_npz(path)
    for key in ("format", "version", "config"):
        if key not in arrays:
            raise ValueError(f"{where} is not an rnnfast model file (no {key!r} entry)")
    fmt = _array_to_text("format", arrays.pop("format"))
    kinds = tuple(kinds)
    cls = next((k for k in kinds if k._FORMAT == fmt), None)
    if cls is None:
        wanted = " or ".join(repr(k._FORMAT) for k in kinds)
        raise ValueError(f"{where} holds a {fmt!r} model, not {wanted}")
    return cls._from_arrays(where, arrays)


# --------------------------------------------------------------------------------------------
# CharRNN


class CharRNN(_RecurrentModel):
    """A character-level language model: text in, text out.

    Characters enter one-hot (or through an ``Embedding`` of ``embedding_dim``), run through an
    ``RNN`` of ``num_layers`` and a ``Linear`` decoder to logits over the vocabulary; training
    minimizes the cross-entropy of the next character (nats per character).

    Args:
        vocab: the characters the model knows, e.g. ``sorted(set(text))``: a string or an
            iterable of single characters, without repeats; token id i is ``vocab[i]``.
        hidden_size: RNN state size.
        num_layers: stacked RNN layers.
        embedding_dim: None for one-hot input, else the size of a learned embedding.
        nonlinearity, dropout: of the RNN.
        dtype: np.float32 (default) or np.float64.
        seed: int, Generator or None: the initial weights (and the dropout masks).
        backend: of the RNN kernels.

    Example:
        >>> text = "hello world. " * 100
        >>> model = CharRNN(sorted(set(text)), hidden_size=64, seed=0)
        >>> losses = model.fit(text, steps=200, bptt=16, batch_size=8)
        >>> model.sample("hel", 20, temperature=0.5, seed=0)  # doctest: +SKIP
        >>> model.save("model.npz"); model = CharRNN.load("model.npz")
    """

    _FORMAT = "rnnfast.CharRNN"
    _CONFIG_KEYS = (*_RNN_CONFIG_KEYS, "embedding_dim")
    _EXTRA_KEYS = ("vocab",)

    def __init__(
        self,
        vocab: str | Iterable[str],
        hidden_size: int,
        num_layers: int = 1,
        *,
        embedding_dim: int | None = None,
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        dtype: Any = np.float32,
        seed: Seed = None,
        backend: str = "auto",
    ) -> None:
        chars = list(vocab)
        if not chars or not all(isinstance(c, str) and len(c) == 1 for c in chars):
            raise ValueError("vocab must be a non-empty string or iterable of single characters")
        if len(set(chars)) != len(chars):
            repeated = sorted({c for c in chars if chars.count(c) > 1})
            raise ValueError(f"vocab must not repeat characters, got repeats {repeated}")
        self.vocab = "".join(chars)
        V = len(chars)
        self.embedding_dim = (
            None if embedding_dim is None else _check_int("embedding_dim", embedding_dim, 1)
        )
        rng = np.random.default_rng(seed)
        super().__init__(
            V if embedding_dim is None else self.embedding_dim,
            hidden_size,
            num_layers,
            V,
            nonlinearity,
            dropout,
            dtype,
            rng,
            backend,
        )
        self.embedding: Embedding | None = None
        if self.embedding_dim is not None:
            self.embedding = self._add_module(
                "embedding", Embedding(V, self.embedding_dim, dtype=self.dtype, seed=rng)
            )
        # Code points, sorted, with each one's token id: for a vectorized encode.
        codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(codes)
        self._sorted_codes, self._code_ids = codes[order], order

    def extra_repr(self) -> str:
        return f"vocab_size={len(self.vocab)}"

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) of a string's characters.

        Raises:
            ValueError: a character outside the vocabulary (named with its position).
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        pos = np.minimum(np.searchsorted(self._sorted_codes, codes), len(self.vocab) - 1)
        unknown = self._sorted_codes[pos] != codes
        if unknown.any():
            i = int(np.argmax(unknown))
            raise ValueError(
                f"text[{i}] = {text[i]!r} is not in the model's vocabulary {self.vocab!r}"
            )
        return self._code_ids[pos].astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """The string of token ids."""
        return "".join(self.vocab[i] for i in ids)

    def _encode(self, ids: Any) -> np.ndarray:
        if self.embedding is not None:
            return self.embedding(ids)
        return one_hot(ids, len(self.vocab), dtype=self.dtype)

    def _encode_backward(self, d_encoded: np.ndarray) -> None:
        if self.embedding is not None:
            self.embedding.backward(d_encoded)

    def fit(
        self,
        text: str,
        steps: int = 1000,
        bptt: int = 64,
        batch_size: int = 32,
        lr: float | None = None,
        optimizer: str | Optimizer = "adam",
        callback: Callable[[Progress], bool | None] | None = None,
        *,
        max_grad_norm: float | None = 5.0,
    ) -> list[float]:
        """Train to predict every next character of ``text`` with truncated BPTT.

        The text is cut into ``batch_size`` contiguous streams trained side by side in windows
        of ``bptt`` characters, the state carried across windows (see
        :func:`rnnfast.truncated_bptt`); after the end of the text training starts over.

        Args:
            text: training text, every character in the vocabulary.
            steps: optimizer steps (windows).
            bptt: window length in characters.
            batch_size: parallel streams.
            lr: learning rate; None for the optimizer's default here (adam 2e-3, adagrad 0.1,
                sgd 1.0).
            optimizer: ``"adam"``, ``"adagrad"``, ``"sgd"`` (a new optimizer per call), or an
                :class:`rnnfast.optim.Optimizer` over ``model.parameters()`` / ``model.grads``
                (its state then carries over between calls).
            callback: called with a :class:`rnnfast.training.Progress` after every step (loss
                in nats per character, ``tokens_per_sec`` in characters per second); returning
                True stops training.
            max_grad_norm: gradient-norm clipping before each step (None: off).

        Returns:
            The loss of every step, in nats per character (log(len(vocab)) is a uniform guess).
        """
        ids = self.encode(text)
        if len(ids) < 2:
            raise ValueError("text must have at least 2 characters")
        return self._fit(
            ids[:-1],
            ids[1:],
            softmax_cross_entropy,
            steps=steps,
            bptt=bptt,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            callback=callback,
            max_grad_norm=max_grad_norm,
        )

    def sample(
        self,
        prefix: str,
        length: int = 200,
        temperature: float = 1.0,
        seed: Seed = None,
    ) -> str:
        """Generate ``length`` characters following ``prefix``.

        The prefix runs through the whole network at once; then each character is drawn from
        softmax(logits / temperature) and fed back through the streaming step
        (:meth:`rnnfast.RNN.step`). Dropout is off while sampling (the mode is restored after).

        Args:
            prefix: at least one character, all in the vocabulary.
            length: characters to generate.
            temperature: > 0: lower is more conservative; 0 picks the most likely character.
            seed: int, Generator or None: the same seed gives the same text.

        Returns:
            The generated characters (without the prefix).
        """
        length = _check_int("length", length, 0)
        temperature = _check_finite_nonnegative("temperature", temperature)
        ids = self.encode(prefix)
        if len(ids) == 0:
            raise ValueError("prefix must have at least one character")
        rng = np.random.default_rng(seed)
        with self._evaluating():
            logits, h = self.forward(ids[:, None])
            logits = logits[-1, 0]
            out = []
            for _ in range(length):
                token = _draw(logits, temperature, rng)
                out.append(token)
                step_logits, h = self._step(self._encode([token]), h)
                logits = step_logits[0]
        return self.decode(out)

    def _own_config(self) -> dict[str, Any]:
        return {"embedding_dim": self.embedding_dim}

    def _extras(self) -> dict[str, np.ndarray]:
        return {"vocab": np.array([ord(c) for c in self.vocab], dtype=np.uint32)}

    @classmethod
    def _from_file(cls, config: dict[str, Any], extras: dict[str, np.ndarray]) -> CharRNN:
        codes = extras["vocab"]
        if codes.dtype != np.uint32 or codes.ndim != 1:
            raise ValueError(f"vocab must be 1-D uint32 code points, got {codes.dtype}")
        vocab = [chr(int(c)) for c in codes]  # chr: ValueError beyond U+10FFFF
        return cls(vocab, **config)


def _draw(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """A token id drawn from softmax(logits / temperature); the argmax at temperature 0."""
    if temperature == 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    p = np.exp(z - z.max())
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))


# --------------------------------------------------------------------------------------------
# SequenceRegressor


class SequenceRegressor(_RecurrentModel):
    """Next-value prediction for a real-valued series (the stock-price style task), trained
    with mean squared error.

    The series is standardized with the mean and standard deviation of the first ``fit``'s data
    (kept and saved with the model); ``predict`` takes and returns the series' own units, while
    ``forward``/``backward`` (the :class:`rnnfast.training.SequenceModel` interface that
    ``fit`` trains through) work on standardized, time-major (T, B, input_size) arrays.

    Args:
        input_size: features per step (1 for a plain series); the model predicts all of them.
        hidden_size, num_layers, nonlinearity, dropout: of the RNN.
        dtype, seed, backend: as :class:`CharRNN`.

    Example:
        >>> series = np.sin(np.arange(2000) * 0.1)
        >>> model = SequenceRegressor(hidden_size=32, seed=0)
        >>> losses = model.fit(series, steps=300, bptt=50, batch_size=8)
        >>> pred = model.predict(series)          # pred[t] forecasts series[t + 1]
        >>> naive = model.last_value_baseline(series)
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
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        dtype: Any = np.float32,
        seed: Seed = None,
        backend: str = "auto",
    ) -> None:
        self.input_size = _check_int("input_size", input_size, 1)
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
        )
        self.mean: np.ndarray | None = None
        """(input_size,) float64: the standardization's mean, set by the first fit."""
        self.std: np.ndarray | None = None
        """(input_size,) float64: the standardization's standard deviation."""

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}"

    def _encode(self, x: Any) -> np.ndarray:
        return _as_float_array("x", x, self.dtype)

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
