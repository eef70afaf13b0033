"""Small datasets that ship with rnnfast or are generated on the spot, seeded: no download.

- :func:`corpus`: the embedded English corpus (original prose written for this project, about
  48 KB) for character-level language models; :func:`text_data` does the same for any text.
- :func:`alphabet`: the alphabet forward and backward ("A B C D..." and "Z Y X W..."), the
  classic sequence-completion puzzle, with :func:`alphabet_prompts` to grade completions.
- :func:`synthetic_series`: a price-like series, trend + seasonality + noise.
- :func:`recall`: a long-range dependency: each line opens with a random symbol, and after a
  gap of filler (dots, or random distractors) ends by repeating it (:func:`recall_positions`
  marks where to grade).

Every function returns NumPy arrays (text comes with its token ids), and every random one takes
a ``seed``: the same seed gives the same data on every machine.
"""

from __future__ import annotations

import math
import string
from importlib import resources
from typing import NamedTuple

import numpy as np

from rnnfast._validation import Seed, check_int

__all__ = [
    "ALPHABET",
    "AlphabetPrompt",
    "TextData",
    "alphabet",
    "alphabet_loss_floor",
    "alphabet_prompts",
    "corpus",
    "corpus_text",
    "recall",
    "recall_positions",
    "synthetic_series",
    "text_data",
]

ALPHABET = string.ascii_uppercase
"""The 26 letters of the alphabet task."""

_SEPARATOR = "\n"


class TextData(NamedTuple):
    """A text with its vocabulary and token ids, ready for :class:`rnnfast.CharRNN`."""

    text: str
    """The text itself."""
    vocab: str
    """Its distinct characters, sorted by code point (token id i is ``vocab[i]``)."""
    ids: np.ndarray
    """(len(text),) int64 token ids: ``vocab[ids[i]] == text[i]``."""


def text_data(text: str) -> TextData:
    """The vocabulary (sorted distinct characters) and token ids of ``text``."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    vocab = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab_codes = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    ids = np.searchsorted(vocab_codes, codes).astype(np.int64)
    return TextData(text, vocab, ids)


def corpus_text() -> str:
    """The embedded corpus: original English prose (short stories and notes on recurrent
    networks) written for rnnfast, ASCII, about 48 KB, shipped inside the package."""
    return resources.files("rnnfast").joinpath("data/corpus.txt").read_text(encoding="utf-8")


def corpus() -> TextData:
    """The embedded corpus (:func:`corpus_text`) with its vocabulary and token ids."""
    return text_data(corpus_text())


# --------------------------------------------------------------------------------------------
# The alphabet task


class AlphabetPrompt(NamedTuple):
    """A completion question of the alphabet task: after ``prompt``, the model should write
    ``answer`` (the rest of the alphabet in that direction, then the line break)."""

    prompt: str
    answer: str
    forward: bool
    """True for A -> Z, False for Z -> A."""


def _run(start: int, forward: bool) -> str:
    """The letters from index ``start`` to the end of the alphabet in one direction."""
    return ALPHABET[start:] if forward else ALPHABET[start::-1]


def alphabet(n_runs: int = 2000, seed: Seed = 0) -> TextData:
    """Runs of the alphabet in both directions, one per line, as training text.

    Each run starts at a random letter and goes to the end of the alphabet in a random
    direction: ``"FGHIJ...XYZ"`` forward or ``"QPON...CBA"`` backward, always at least two
    letters. From any two consecutive letters of a run the rest of it is determined, so a
    model that has learned the task completes every :func:`alphabet_prompts` prompt exactly.

    Args:
        n_runs: number of runs (lines); the text has about ``14 * n_runs`` characters.
        seed: int, Generator or None.

    Returns:
        TextData over the vocabulary ``"\\n" + ALPHABET`` (27 characters).
    """
    n_runs = check_int("n_runs", n_runs, 1)
    rng = np.random.default_rng(seed)
    forward = rng.random(n_runs) < 0.5
    # Forward runs start at A..Y, backward ones at B..Z: every run has two letters or more.
    starts = rng.integers(0, len(ALPHABET) - 1, n_runs) + np.where(forward, 0, 1)
    text = "".join(_run(int(s), bool(f)) + _SEPARATOR for s, f in zip(starts, forward, strict=True))
    return text_data(text)


RECALL_SYMBOLS = "abcd"
"""The symbols a :func:`recall` line opens with (and must end with)."""


def recall(
    n_lines: int = 3000, gap: int | tuple[int, int] = 15, seed: Seed = 0, *, filler: str = "."
) -> TextData:
    """Lines ``c + gap filler characters + "=" + c + "\\n"`` with ``c`` drawn from
    :data:`RECALL_SYMBOLS`: to predict the character after ``=``, a model must remember the
    line's first character across ``gap + 1`` steps. With ``gap=(lo, hi)`` each line's gap is
    drawn from lo..hi, so where the ``=`` comes is not known in advance either.

    With one filler character (the default, dots) nothing but the opening symbol varies, so a
    model that remembers it predicts every line's last two characters exactly; one that does
    not is right a quarter of the time. With several, each gap character is drawn uniformly
    from ``filler``: distractors that the memory must ignore.

    Args:
        n_lines: number of lines; the text has ``(gap + 4) * n_lines`` characters (the mean
            gap for a range).
        gap: the filler between the symbol and ``=``: a length, or a range ``(lo, hi)`` of
            lengths, both included, each line's drawn uniformly.
        seed: int, Generator or None.
        filler: the characters the gap is drawn from (distinct, none of
            :data:`RECALL_SYMBOLS`, ``=`` or a line break).

    Returns:
        TextData over ``"\\n=abcd"`` and the filler characters.
    """
    n_lines = check_int("n_lines", n_lines, 1)
    if isinstance(gap, tuple):
        if len(gap) != 2:
            raise ValueError(f"gap must be an int or a (lo, hi) pair, got {gap!r}")
        lo = check_int("gap[0]", gap[0], 0)
        hi = check_int("gap[1]", gap[1], lo)
    else:
        lo = hi = check_int("gap", gap, 0)
    if not isinstance(filler, str):
        raise TypeError(f"filler must be a str, got {type(filler).__name__}")
    if not filler:
        raise ValueError("filler must have at least one character")
    reserved = set(RECALL_SYMBOLS + "=\n")
    if reserved & set(filler) or len(set(filler)) != len(filler):
        raise ValueError(
            f"filler must be distinct characters other than {RECALL_SYMBOLS!r}, '=' and a line "
            f"break, got {filler!r}"
        )
    rng = np.random.default_rng(seed)
    symbols = rng.integers(0, len(RECALL_SYMBOLS), n_lines)
    # Draws only for what varies: a fixed gap of one filler gives the texts of older versions.
    lengths = rng.integers(lo, hi + 1, n_lines) if hi > lo else np.full(n_lines, lo)
    if len(filler) == 1:
        gaps = [filler * int(n) for n in lengths]
    else:
        chars = np.array(list(filler))[rng.integers(0, len(filler), int(lengths.sum()))]
        gaps = ["".join(row) for row in np.split(chars, np.cumsum(lengths)[:-1])]
    text = "".join(
        RECALL_SYMBOLS[i] + middle + "=" + RECALL_SYMBOLS[i] + "\n"
        for i, middle in zip(symbols, gaps, strict=True)
    )
    return text_data(text)


def recall_positions(data: TextData) -> np.ndarray:
    """The positions t of every ``=`` in a :func:`recall` text: ``text[t + 1]`` is the symbol
    to recall, so a model is graded on its prediction after reading ``text[: t + 1]``."""
    return np.flatnonzero(np.frombuffer(data.text.encode("utf-8"), np.uint8) == ord("="))


def alphabet_loss_floor() -> float:
    """The lowest possible next-character loss on :func:`alphabet` text (its entropy rate),
    in nats per character.

    Only two things are random in a run: its first letter, and its direction when that letter
    is neither A (forward only) nor Z (backward only); the rest, and the line break, follow.
    The floor is their entropy divided by the mean length of a run with its line break.
    """
    n = len(ALPHABET)
    # First letters: forward runs start at A..Y, backward ones at B..Z, half of them each.
    p_first = np.full(n, 1.0 / (n - 1))
    p_first[[0, -1]] = 0.5 / (n - 1)
    h_first = -float(np.sum(p_first * np.log(p_first)))
    h_direction = (1.0 - p_first[0] - p_first[-1]) * math.log(2)
    mean_length = (n + 2) / 2 + 1  # letters of a run from a uniform start, + the line break
    return (h_first + h_direction) / mean_length


def alphabet_prompts(prompt_length: int = 2) -> list[AlphabetPrompt]:
    """Every completion question of the alphabet task with prompts of ``prompt_length``
    letters: the prompt starts a line (a line break, then the letters), in both directions.

    With ``prompt_length=2`` there are 48 questions, 24 per direction: "AB" (answer "C...Z"
    and a line break) to "XY" (answer "Z"), and "ZY" (answer "X...A") to "CB" (answer "A").
    """
    prompt_length = check_int("prompt_length", prompt_length, 1)
    prompts = []
    for forward in (True, False):
        for i in range(len(ALPHABET) - prompt_length):
            run = _run(i if forward else len(ALPHABET) - 1 - i, forward)
            prompts.append(
                AlphabetPrompt(
                    _SEPARATOR + run[:prompt_length], run[prompt_length:] + _SEPARATOR, forward
                )
            )
    return prompts


# --------------------------------------------------------------------------------------------
# The synthetic series


def synthetic_series(
    n: int = 4000,
    seed: Seed = 0,
    *,
    start: float = 100.0,
    trend: float = 0.002,
    period: int = 25,
    amplitude: float = 5.0,
    noise: float = 0.5,
) -> np.ndarray:
    """A price-like series: trend + seasonality + noise, float64 (n,).

    ``x[t] = start + trend * t + amplitude * (sin(2 pi t / period) + 0.4 sin(4 pi t / period
    + phase)) + noise * e[t]``, where ``e`` is a mildly autocorrelated AR(1) noise with unit
    variance (coefficient 0.3) and ``phase`` is drawn from the seed. The naive forecast
    "tomorrow equals today" is off by the seasonal move of every step plus twice the noise; a
    model that has learned the season is off by about the noise alone.

    Args:
        n: number of steps.
        seed: int, Generator or None: the noise and the phase.
        start, trend, period, amplitude, noise: the level at t = 0, the slope per step, the
            seasonal period in steps, its amplitude and the noise's standard deviation.
    """
    n = check_int("n", n, 1)
    period = check_int("period", period, 2)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(n, dtype=np.float64)
    season = np.sin(2 * np.pi * t / period) + 0.4 * np.sin(4 * np.pi * t / period + phase)
    phi = 0.3  # e[t] = phi * e[t - 1] + sqrt(1 - phi^2) * shock[t], stationary from t = 0
    shocks = rng.standard_normal(n) * np.sqrt(1 - phi**2)
    shocks[0] = rng.standard_normal()
    e = np.empty(n)
    prev = 0.0
    for i, shock in enumerate(shocks.tolist()):  # Python floats: a cheap loop at these sizes
        prev = phi * prev + shock
        e[i] = prev
    return start + trend * t + amplitude * season + noise * e
