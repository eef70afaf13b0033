"""CharRNN: a character-level language model."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from rnnfast._validation import (
    Seed,
    check_finite_nonnegative,
    check_int,
)
from rnnfast.models._base import _RNN_CONFIG_KEYS, _RecurrentModel
from rnnfast.models._train import CrossEntropyStep
from rnnfast.nn import Embedding, one_hot
from rnnfast.train import (
    Optimizer,
    Progress,
    softmax_cross_entropy,
)

__all__ = ["CharRNN"]


_CODE_TABLE_MAX = 1 << 16  # encode's table of ids by code point: 512 KiB at most

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
        cell: the recurrent cell: ``"rnn"`` (Elman, the default), ``"lstm"`` or ``"gru"``.
        nonlinearity, dropout: of the recurrent layer (nonlinearity: ``"rnn"`` only).
        dtype: np.float32 (default) or np.float64.
        seed: int, Generator or None: the initial weights (and the dropout masks).
        backend: of the RNN kernels.

    Examples:
        >>> text = "hello world. " * 20
        >>> model = CharRNN(sorted(set(text)), hidden_size=16, seed=0)
        >>> result = model.fit(text, steps=5, bptt=8, batch_size=4)
        >>> sample = model.sample("hel", 10, temperature=0.5, seed=0)
        >>> len(sample), set(sample) <= set(model.vocab)
        (10, True)

        Save with ``model.save("model.npz")``, load with ``CharRNN.load("model.npz")``.
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
        cell: str = "rnn",
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
            repeated = sorted(c for c, n in collections.Counter(chars).items() if n > 1)
            raise ValueError(f"vocab must not repeat characters, got repeats {repeated[:20]}")
        # Text only: a lone surrogate (U+D800..U+DFFF) cannot be encoded, so sample() and the
        # command line's output would fail on it.
        surrogates = [c for c in chars if "\ud800" <= c <= "\udfff"]
        if surrogates:
            raise ValueError(f"vocab must be text, got lone surrogate U+{ord(surrogates[0]):04X}")
        self.vocab = "".join(chars)
        V = len(chars)
        self.embedding_dim = (
            None if embedding_dim is None else check_int("embedding_dim", embedding_dim, 1)
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
            cell,
        )
        # Code points, sorted, with each one's token id: for a vectorized encode; and where the
        # code points are small, the id of every code point up to the largest (-1: none), so
        # that encode is one gather (a tenth of searchsorted's time: fit encodes its text at
        # every call).
        codes = np.array([ord(c) for c in chars], dtype=np.uint32)
        order = np.argsort(codes)
        self._sorted_codes, self._code_ids = codes[order], order
        self._code_table: np.ndarray | None = None
        if len(codes) and int(codes.max()) < _CODE_TABLE_MAX:
            self._code_table = np.full(int(codes.max()) + 2, -1, dtype=np.int64)
            self._code_table[codes] = np.arange(len(codes))

    def _extra_shapes(self) -> list[tuple[int, ...]]:
        return [] if self.embedding_dim is None else [(len(self.vocab), self.embedding_dim)]

    def _add_encoding(self, rng: np.random.Generator) -> None:
        self.embedding: Embedding | None = None
        if self.embedding_dim is not None:
            self.embedding = self._add_module(
                "embedding",
                Embedding(len(self.vocab), self.embedding_dim, dtype=self.dtype, seed=rng),
            )

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
        table = getattr(self, "_code_table", None)  # (None in a model pickled without it)
        if table is not None:  # its last entry, -1, for every code point above the vocabulary's
            ids = table[np.minimum(codes, len(table) - 1)]
            unknown = ids < 0
        else:
            pos = np.minimum(np.searchsorted(self._sorted_codes, codes), len(self.vocab) - 1)
            unknown = self._sorted_codes[pos] != codes
        if unknown.any():
            i = int(np.argmax(unknown))
            raise ValueError(
                f"text[{i}] = {text[i]!r} is not in the model's vocabulary {self.vocab!r}"
            )
        return ids if table is not None else self._code_ids[pos].astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        """The string of token ids."""
        return "".join(self.vocab[i] for i in ids)

    def rnn_inputs(self, ids: Any) -> np.ndarray:
        if self.embedding is not None:
            return self.embedding(ids)
        return one_hot(ids, len(self.vocab), dtype=self.dtype)

    def _training_step(self, loss_fn: Callable[..., Any]) -> CrossEntropyStep | None:
        if loss_fn is not softmax_cross_entropy:
            return None
        step = getattr(self, "_fused_step", None)
        if step is None:
            step = self._fused_step = CrossEntropyStep(self, one_hot=self.embedding is None)
        return step

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
                :class:`rnnfast.train.Optimizer` over ``model.parameters()`` / ``model.grads``
                (its state then carries over between calls).
            callback: called with a :class:`rnnfast.train.Progress` after every step (loss
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
        length = check_int("length", length, 0)
        temperature = check_finite_nonnegative("temperature", temperature)
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
                step_logits, h = self._step(self.rnn_inputs([token]), h)
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
    """A token id drawn from softmax(logits / temperature); the argmax at temperature 0.

    Raises:
        ValueError: a logit is NaN or infinite (argmax and the cumulative sum would
            otherwise pick a character silently, whatever the model says).
    """
    if not np.isfinite(logits).all():
        raise ValueError(
            "cannot sample: the model's next-character logits are not finite (NaN or inf): "
            "its weights are not finite, or so large that the logits overflow"
        )
    if temperature == 0:
        return int(np.argmax(logits))
    # The maximum subtracted before dividing: at a tiny temperature logits / temperature
    # overflows to inf, and inf - inf is NaN; this way the unlikely ones go to -inf, as meant.
    with np.errstate(over="ignore"):
        z = (logits.astype(np.float64) - float(logits.max())) / temperature
    p = np.exp(z)
    cdf = np.cumsum(p)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(p) - 1))
