"""rnnfast.datasets: the embedded corpus, the alphabet task and the synthetic series."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from rnnfast import datasets
from rnnfast.datasets import ALPHABET

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Text


def test_corpus_is_sizable_ascii_prose():
    data = datasets.corpus()
    assert 40_000 <= len(data.text) <= 80_000  # "tens of KB"
    assert data.text.isascii()
    assert data.text == datasets.corpus_text()
    words = data.text.split()
    assert len(words) > 8_000
    assert len({w.strip('.,;:?!"').lower() for w in words}) > 1_000  # prose, not a pattern
    assert 40 <= len(data.vocab) <= 80


def test_corpus_ids_and_vocab():
    data = datasets.corpus()
    assert data.vocab == "".join(sorted(set(data.text)))
    assert data.ids.dtype == np.int64
    assert data.ids.shape == (len(data.text),)
    assert "".join(data.vocab[i] for i in data.ids) == data.text


def test_corpus_ships_as_package_data():
    assert resources.files("rnnfast").joinpath("data/corpus.txt").is_file()
    # Both the wheel (package-data) and the sdist (MANIFEST.in) must carry it.
    assert '"data/*.txt"' in (ROOT / "pyproject.toml").read_text()
    assert "recursive-include src/rnnfast/data *.txt" in (ROOT / "MANIFEST.in").read_text()


def test_text_data_of_any_text():
    text = "héllo wörld, ✓ and \U0001f600!"
    data = datasets.text_data(text)
    assert data.vocab == "".join(sorted(set(text)))
    assert [ord(c) for c in data.vocab] == sorted(ord(c) for c in data.vocab)
    assert "".join(data.vocab[i] for i in data.ids) == text
    empty = datasets.text_data("")
    assert empty.vocab == "" and empty.ids.shape == (0,)
    with pytest.raises(TypeError, match="str"):
        datasets.text_data(b"bytes")


# --------------------------------------------------------------------------------------------
# The alphabet task


def test_alphabet_is_seeded():
    a, b = datasets.alphabet(300, seed=1), datasets.alphabet(300, seed=1)
    assert a.text == b.text
    np.testing.assert_array_equal(a.ids, b.ids)
    assert datasets.alphabet(300, seed=2).text != a.text


def test_alphabet_runs_go_to_the_end_in_both_directions():
    data = datasets.alphabet(2000, seed=0)
    assert data.vocab == "\n" + ALPHABET
    lines = data.text.split("\n")
    assert lines[-1] == ""  # every run ends with a line break
    runs = lines[:-1]
    assert len(runs) == 2000
    forward = 0
    for run in runs:
        assert len(run) >= 2
        if run[1] > run[0]:
            forward += 1
            assert ALPHABET.endswith(run)
        else:
            assert ALPHABET[::-1].endswith(run)
    assert 0.45 < forward / len(runs) < 0.55
    starts = {run[0] for run in runs}
    assert starts == set(ALPHABET)  # A only forward, Z only backward, all others both ways


def test_alphabet_rejects_bad_sizes():
    with pytest.raises(ValueError, match="n_runs"):
        datasets.alphabet(0)
    with pytest.raises(TypeError, match="n_runs"):
        datasets.alphabet(2.5)


def test_alphabet_prompts():
    prompts = datasets.alphabet_prompts(2)
    assert len(prompts) == 48
    assert sum(p.forward for p in prompts) == 24
    for p in prompts:
        assert p.prompt.startswith("\n") and len(p.prompt) == 3
        assert p.answer.endswith("\n")
        run = (p.prompt + p.answer).strip("\n")
        assert (ALPHABET if p.forward else ALPHABET[::-1]).endswith(run)
    assert datasets.AlphabetPrompt("\nAB", ALPHABET[2:] + "\n", True) in prompts
    assert datasets.AlphabetPrompt("\nCB", "A\n", False) in prompts
    assert len(datasets.alphabet_prompts(5)) == 2 * 21


def test_alphabet_loss_floor_is_the_entropy_of_the_text():
    """The optimal predictor's loss on a long sample, computed character by character,
    converges to the floor."""
    data = datasets.alphabet(20_000, seed=3)
    n = len(ALPHABET)
    total = 0.0
    for run in data.text.split("\n")[:-1]:
        first = 0.5 / (n - 1) if run[0] in "AZ" else 1.0 / (n - 1)
        total -= math.log(first)
        if run[0] not in "AZ":
            total += math.log(2)  # which way it goes
    empirical = total / len(data.text)
    assert datasets.alphabet_loss_floor() == pytest.approx(empirical, rel=0.01)
    assert 0.2 < datasets.alphabet_loss_floor() < 0.35


# --------------------------------------------------------------------------------------------
# The synthetic series


def test_series_is_seeded_float64():
    a = datasets.synthetic_series(500, seed=4)
    assert a.shape == (500,) and a.dtype == np.float64
    np.testing.assert_array_equal(a, datasets.synthetic_series(500, seed=4))
    assert not np.array_equal(a, datasets.synthetic_series(500, seed=5))
    assert np.all(np.isfinite(a))


def test_series_components():
    n, period = 6000, 25
    s = datasets.synthetic_series(n, seed=0, trend=0.01, period=period, amplitude=5.0, noise=0.5)
    t = np.arange(n)
    slope = np.polyfit(t, s, 1)[0]
    assert slope == pytest.approx(0.01, rel=0.05)
    detrended = s - np.polyval(np.polyfit(t, s, 1), t)
    spectrum = np.abs(np.fft.rfft(detrended))
    assert np.argmax(spectrum) == n // period  # the season dominates
    assert s[0] == pytest.approx(100.0, abs=8)


def test_series_noise_is_mild_ar1():
    e = datasets.synthetic_series(20_000, seed=1, trend=0.0, amplitude=0.0, noise=2.0) - 100.0
    assert e.std() == pytest.approx(2.0, rel=0.05)
    lag1 = np.corrcoef(e[:-1], e[1:])[0, 1]
    assert lag1 == pytest.approx(0.3, abs=0.03)


def test_series_naive_forecast_is_beatable():
    """The naive last-value forecast is off by the seasonal move plus two noises: far more
    than the noise a seasonal model is left with."""
    s = datasets.synthetic_series(seed=0)
    naive_mse = np.mean(np.diff(s) ** 2)
    assert naive_mse > 4 * 0.5**2


def test_series_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n"):
        datasets.synthetic_series(0)
    with pytest.raises(ValueError, match="period"):
        datasets.synthetic_series(10, period=1)


def test_recall_lines_repeat_their_opening_symbol_after_the_gap():
    data = datasets.recall(50, gap=7, seed=3)
    lines = data.text.split("\n")[:-1]
    assert len(lines) == 50 and data.text.endswith("\n")
    for line in lines:
        assert line[0] in datasets.RECALL_SYMBOLS and line == line[0] + "." * 7 + "=" + line[0]
    assert len({line[0] for line in lines}) == 4  # every symbol drawn
    positions = datasets.recall_positions(data)
    assert list(positions) == [i * 11 + 8 for i in range(50)]
    assert all(data.text[p + 1] == data.text[p - 8] for p in positions)
    assert datasets.recall(50, gap=7, seed=3).text == data.text
    assert datasets.recall(50, gap=7, seed=4).text != data.text
    with pytest.raises(ValueError):
        datasets.recall(0)


def test_recall_with_a_gap_range_draws_each_lines_gap():
    data = datasets.recall(400, gap=(3, 9), seed=2)
    lines = data.text.split("\n")[:-1]
    gaps = [len(line) - 3 for line in lines]
    assert set(gaps) == set(range(3, 10))  # every length in the range, both ends included
    for line, gap in zip(lines, gaps, strict=True):
        assert line == line[0] + "." * gap + "=" + line[0]
    positions = datasets.recall_positions(data)
    assert len(positions) == 400
    for p, gap in zip(positions, gaps, strict=True):
        assert data.text[p + 1] == data.text[p - 1 - gap]
    assert datasets.recall(400, gap=(3, 9), seed=2).text == data.text
    assert datasets.recall(50, gap=(7, 7), seed=3).text == datasets.recall(50, 7, seed=3).text
    for bad in ((5, 4), (1, 2, 3), (-1, 2)):
        with pytest.raises(ValueError, match="gap"):
            datasets.recall(5, gap=bad)


def test_recall_with_distractors_draws_the_gap_from_the_filler():
    data = datasets.recall(200, gap=9, seed=5, filler="0123")
    lines = data.text.split("\n")[:-1]
    assert data.vocab == "\n0123=abcd"
    for line in lines:
        assert len(line) == 12 and line[0] == line[-1] and line[-2] == "="
        assert set(line[1:10]) <= set("0123")
    assert len({line[1:10] for line in lines}) == 200  # every gap drawn anew
    positions = datasets.recall_positions(data)
    assert all(data.text[p + 1] == data.text[p - 10] for p in positions)
    # One filler character draws nothing: the symbols are the dots' ones.
    dashes = datasets.recall(50, gap=7, seed=3, filler="-").text
    assert dashes == datasets.recall(50, gap=7, seed=3).text.replace(".", "-")
    for bad in ("", "a", "0=", "\n", "00"):
        with pytest.raises(ValueError, match="filler"):
            datasets.recall(5, filler=bad)
    with pytest.raises(TypeError, match="filler"):
        datasets.recall(5, filler=5)
