"""CharRNN and SequenceRegressor used as a user would: they learn, sample reproducibly, and
save to / load from model files that are checked and can never run code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import assert_close

import rnnfast
from rnnfast import CharRNN, SequenceRegressor
from rnnfast.train import bptt_windows

TEXT = "one ring to rule them all, one ring to find them. " * 30


@pytest.fixture(scope="module")
def trained() -> tuple[CharRNN, list[float], list]:
    """A CharRNN trained for 200 steps on TEXT, its losses and the callback's reports."""
    model = CharRNN(sorted(set(TEXT)), 32, seed=0)
    reports = []
    losses = model.fit(TEXT, steps=200, bptt=16, batch_size=8, lr=1e-2, callback=reports.append)
    return model, losses, reports


def test_char_rnn_learns_a_repetitive_text(trained):
    model, losses, reports = trained
    uniform = np.log(len(model.vocab))
    assert len(losses) == 200
    assert losses[0] == pytest.approx(uniform, rel=0.05)  # starts as a uniform guess
    assert np.mean(losses[-20:]) < 0.1 * uniform
    assert [r.step for r in reports] == list(range(1, 201))
    windows = bptt_windows((len(TEXT) - 1) // 8, 16)  # 8 streams of the text
    chars = sum(w.stop - w.start for w in (windows * 200)[:200]) * 8
    assert reports[-1].tokens == chars
    assert all(r.tokens_per_sec > 0 for r in reports)  # characters per second
    assert model.sample("one ring to ", 30, temperature=0) == "rule them all, one ring to fin"


def test_adagrad_from_scratch_recipe_learns_too():
    model = CharRNN(sorted(set(TEXT)), 32, seed=1)
    losses = model.fit(TEXT, steps=150, bptt=25, batch_size=4, optimizer="adagrad")
    assert np.mean(losses[-20:]) < 0.5 * np.log(len(model.vocab))


def test_sample_is_reproducible_and_follows_the_full_forward(trained):
    model, _, _ = trained
    model.train()
    a = model.sample("one", 60, temperature=1.0, seed=5)
    assert model.training  # the mode is restored
    assert a == model.sample("one", 60, temperature=1.0, seed=5)
    assert len(a) == 60 and set(a) <= set(model.vocab)
    assert model.sample("one", 0) == ""

    untrained = CharRNN(model.vocab, 16, seed=3)
    samples = {untrained.sample("o", 40, seed=s) for s in range(4)}
    assert len(samples) == 4  # a different seed, a different text

    # Greedy sampling streams through RNN.step; the full forward over the prefix and the
    # generated text must pick the same characters at every position.
    prefix = "ring"
    greedy = untrained.sample(prefix, 25, temperature=0)
    ids = untrained.encode(prefix + greedy[:-1])
    logits, _ = untrained.eval()(ids[:, None])
    assert untrained.decode(logits[len(prefix) - 1 :, 0].argmax(-1)) == greedy


def test_sample_checks_its_arguments(trained):
    model, _, _ = trained
    with pytest.raises(ValueError, match=r"text\[1\] = 'Z' is not in the model's vocabulary"):
        model.sample("oZ", 5)
    with pytest.raises(ValueError, match="at least one character"):
        model.sample("", 5)
    with pytest.raises(ValueError, match="temperature"):
        model.sample("o", 5, temperature=-1)
    with pytest.raises(ValueError, match="length must be >= 0"):
        model.sample("o", -1)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampling_from_non_finite_logits_is_an_error(bad, temperature):
    """A diverged model's NaN logits used to come out as a character (the last of the
    vocabulary, or argmax's pick), as if the model had chosen it."""
    model = CharRNN("abcd", 4, seed=0)
    model.parameters()["decoder.bias"][1] = bad
    with pytest.raises(ValueError, match="logits are not finite"):
        model.sample("ab", 3, temperature=temperature, seed=0)


def test_a_tiny_temperature_samples_the_argmax():
    """logits / 5e-324 overflows to inf; the maximum is subtracted first, so the draw is the
    greedy one rather than the NaN softmax's last character."""
    model = CharRNN("abcdefgh", 8, seed=2)
    greedy = model.sample("ab", 20, temperature=0)
    assert len(set(greedy)) > 1  # not one character repeated, as the NaN draw gave
    assert model.sample("ab", 20, temperature=5e-324, seed=0) == greedy


def test_encode_decode_and_vocab_checks():
    model = CharRNN("abc", 4, seed=0)
    np.testing.assert_array_equal(model.encode("cab"), [2, 0, 1])
    assert model.decode([2, 0, 1]) == "cab"
    unicode = CharRNN(["\x00", "é", "🙂", " "], 4, seed=0)
    assert unicode.decode(unicode.encode("🙂 \x00é")) == "🙂 \x00é"
    with pytest.raises(ValueError, match=r"repeats \['a'\]"):
        CharRNN("aba", 4)
    with pytest.raises(ValueError, match="single characters"):
        CharRNN(["ab", "c"], 4)
    with pytest.raises(ValueError, match="non-empty"):
        CharRNN("", 4)


def test_fit_takes_an_optimizer_instance_and_checks_it():
    model = CharRNN(sorted(set(TEXT)), 8, seed=0)
    opt = rnnfast.Adagrad(model.parameters(), model.grads, lr=0.1)
    model.fit(TEXT, steps=3, bptt=8, batch_size=2, optimizer=opt)
    model.fit(TEXT, steps=2, bptt=8, batch_size=2, optimizer=opt)
    assert opt.steps == 5  # its state carried over
    other = CharRNN(sorted(set(TEXT)), 8, seed=0)
    with pytest.raises(ValueError, match="this model's parameters"):
        model.fit(TEXT, steps=1, optimizer=rnnfast.Adam(other.parameters(), other.grads))
    with pytest.raises(ValueError, match="lr is the optimizer's"):
        model.fit(TEXT, steps=1, optimizer=opt, lr=0.1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        model.fit(TEXT, steps=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="too short for batch_size=64"):
        model.fit(TEXT[:50], steps=1, batch_size=64)


# --------------------------------------------------------------------------------------------
# Model files


def test_save_load_round_trip(trained, tmp_path):
    model, _, _ = trained
    path = tmp_path / "model.bin"
    model.save(path)
    model.save(path)  # replaces it
    assert [p.name for p in tmp_path.iterdir()] == ["model.bin"]  # no ".npz" added, no temp
    loaded = CharRNN.load(path)
    assert not loaded.training
    assert loaded.vocab == model.vocab and repr(loaded) == repr(model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    for seed in range(3):
        assert loaded.sample("one", 50, seed=seed) == model.sample("one", 50, seed=seed)


def test_round_trip_of_every_option(tmp_path):
    model = CharRNN(
        ["\x00", "a", "🙂", "\n"],
        6,
        num_layers=2,
        embedding_dim=3,
        nonlinearity="relu",
        dropout=0.25,
        dtype=np.float64,
        seed=4,
    )
    model.fit("a🙂\n\x00a" * 20, steps=3, bptt=4, batch_size=2)
    model.save(tmp_path / "m.npz")
    loaded = CharRNN.load(tmp_path / "m.npz")
    assert loaded.vocab == model.vocab and loaded.embedding_dim == 3
    assert (loaded.rnn.num_layers, loaded.rnn.nonlinearity, loaded.rnn.dropout) == (2, "relu", 0.25)
    assert loaded.dtype == np.float64
    assert loaded.sample("a", 20, seed=1) == model.sample("a", 20, seed=1)


def rewrite(src, dst, drop=(), **changes) -> None:
    """A copy of the model file ``src`` at ``dst`` with entries changed, added or dropped."""
    with np.load(src, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files if k not in drop}
    arrays |= {k.replace("__", "/"): v for k, v in changes.items()}
    np.savez(dst, **arrays)


def text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8)


CONFIG = (
    '{"cell": "rnn", "dropout": 0.0, "dtype": "float32", "embedding_dim": null, "hidden_size": 32, '
    '"nonlinearity": "tanh", "num_layers": 1}'
)


@pytest.mark.parametrize(
    ("drop", "changes", "match"),
    [
        ((), {"version": np.array(3)}, "format version 3, but this rnnfast reads version 2"),
        ((), {"version": np.array(1.0)}, "version must be an integer"),
        ((), {"format": text("rnnfast.SequenceRegressor")}, "holds a 'rnnfast.SequenceRegressor'"),
        (("format",), {}, "not an rnnfast model file"),
        ((), {"config": text("{not json")}, "not valid JSON"),
        ((), {"config": text(CONFIG.replace("null", '"x"'))}, "invalid configuration"),
        ((), {"config": text(CONFIG.replace("}", ', "seed": 1}'))}, "exactly the keys"),
        ((), {"config": text(CONFIG.replace("32", "33"))}, "'hidden_size' = 33 is larger"),
        ((), {"param__decoder.bias": np.zeros(17)}, "'decoder.bias' is float64, expected float32"),
        ((), {"param__decoder.bias": np.full(17, np.nan, np.float32)}, "non-finite"),
        (("param/decoder.bias",), {}, "describes more weights than the file stores"),
        ((), {"param__extra": np.zeros(1, np.float32)}, r"unexpected \['extra'\]"),
        ((), {"surprise": np.zeros(1)}, "unexpected entry 'surprise.npy'"),
        ((), {"extra__vocab": np.array([0x110000], np.uint32)}, "invalid configuration"),
        ((), {"extra__vocab": np.array([97, 97], np.uint32)}, "repeat"),
    ],
)
def test_a_tampered_file_is_a_clear_error(trained, tmp_path, drop, changes, match):
    model, _, _ = trained
    model.save(tmp_path / "good.npz")
    rewrite(tmp_path / "good.npz", tmp_path / "bad.npz", drop, **changes)
    with pytest.raises(ValueError, match=match):
        CharRNN.load(tmp_path / "bad.npz")


def test_damaged_files_never_load_a_wrong_model(trained, tmp_path):
    """Truncated anywhere, or with any byte flipped: a ValueError, or (for bytes the archive
    does not check, like timestamps) exactly the saved model."""
    model, _, _ = trained
    good = tmp_path / "good.npz"
    model.save(good)
    data = good.read_bytes()
    bad = tmp_path / "bad.npz"
    rng = np.random.default_rng(0)
    for cut in (0, 1, 100, len(data) // 2, len(data) - 30, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a readable rnnfast model file"):
            CharRNN.load(bad)
    offsets = np.concatenate(
        [rng.choice(len(data), 120, replace=False), np.arange(len(data))[-60:]]
    )
    errors = 0
    for offset in offsets:
        damaged = bytearray(data)
        damaged[offset] ^= 0x5A
        bad.write_bytes(bytes(damaged))
        try:
            loaded = CharRNN.load(bad)
        except ValueError:
            errors += 1
            continue
        assert loaded.vocab == model.vocab, offset
        for k, v in model.state_dict().items():
            np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=str(offset))
    assert errors > 0.8 * len(offsets)


_unpickled = []


class _Payload:
    def __reduce__(self):
        return (_unpickled.append, ("code ran",))


def test_a_model_file_can_never_run_code(trained, tmp_path):
    model, _, _ = trained
    model.save(tmp_path / "good.npz")
    evil = np.array([_Payload()], dtype=object)
    rewrite(tmp_path / "good.npz", tmp_path / "evil.npz", extra__vocab=evil)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        CharRNN.load(tmp_path / "evil.npz")
    (tmp_path / "pickle.npz").write_bytes(__import__("pickle").dumps(_Payload()))
    with pytest.raises(ValueError, match="not a readable rnnfast model file"):
        CharRNN.load(tmp_path / "pickle.npz")
    assert _unpickled == []


def test_not_a_model_file(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    (tmp_path / "empty.npz").write_bytes(b"")
    for name, match in [
        ("notes.txt", "not a readable"),
        ("array.npy", "single array"),
        ("other.npz", "unexpected entry 'a.npy'"),
        ("empty.npz", "not a readable"),
    ]:
        with pytest.raises(ValueError, match=match):
            CharRNN.load(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        CharRNN.load(tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------------
# SequenceRegressor


def noisy_sine(n: int, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return 10 + 3 * np.sin(0.3 * t) + np.sin(0.07 * t) + 0.05 * rng.standard_normal(n)


def test_sequence_regressor_beats_the_last_value_baseline(tmp_path):
    series = noisy_sine(2600)
    train, test = series[:2000], series[2000:]
    model = SequenceRegressor(hidden_size=24, seed=0)
    losses = model.fit(train, steps=250, bptt=40, batch_size=10, lr=1e-2)
    assert np.mean(losses[-10:]) < 0.1 * np.mean(losses[:5])
    pred = model.predict(test)
    baseline = SequenceRegressor.last_value_baseline(test)
    assert pred.shape == baseline.shape == test.shape
    mse_model = np.mean((pred[:-1] - test[1:]) ** 2)
    mse_naive = np.mean((baseline[:-1] - test[1:]) ** 2)
    assert mse_model < 0.5 * mse_naive

    model.save(tmp_path / "reg.npz")
    loaded = SequenceRegressor.load(tmp_path / "reg.npz")
    assert_close(loaded.predict(test), pred, 0)
    with pytest.raises(ValueError, match=r"holds a 'rnnfast\.SequenceRegressor'"):
        CharRNN.load(tmp_path / "reg.npz")


def test_sequence_regressor_shapes_and_checks():
    model = SequenceRegressor(input_size=2, hidden_size=4, seed=0)
    series = np.stack([noisy_sine(50), noisy_sine(50, 1)], axis=1)
    with pytest.raises(RuntimeError, match="fit"):
        model.predict(series)
    with pytest.raises(RuntimeError, match="fit"):
        model.save("never-written.npz")
    model.fit(series, steps=2, bptt=5, batch_size=2)
    assert model.predict(series).shape == (50, 2)
    assert model.mean.shape == model.std.shape == (2,)
    with pytest.raises(ValueError, match=r"\(N, input_size\) with input_size=2"):
        model.predict(series[:, 0])
    with pytest.raises(ValueError, match="finite"):
        model.predict(np.full((3, 2), np.nan))


# The recurrent cell: "rnn", "lstm", "gru".

DATA = Path(__file__).parent / "data"
GATED = pytest.mark.skipif(
    not (hasattr(rnnfast.nn, "LSTM") and hasattr(rnnfast.nn, "GRU")),
    reason="this rnnfast has no gated layers",
)
CELLS = ["rnn", pytest.param("lstm", marks=GATED), pytest.param("gru", marks=GATED)]


def test_a_version_1_file_loads_as_a_plain_rnn():
    """tests/data/char_rnn_v1.npz was written by the format-1 code (a CharRNN, hidden 8,
    float64, seed 0, fitted 5 steps); it samples what that code sampled."""
    with np.load(DATA / "char_rnn_v1.npz", allow_pickle=False) as f:
        assert int(f["version"]) == 1
        assert b"cell" not in f["config"].tobytes()
    model = CharRNN.load(DATA / "char_rnn_v1.npz")
    assert model.cell == "rnn" and isinstance(model.rnn, rnnfast.RNN)
    assert (model.rnn.hidden_size, model.dtype) == (8, np.float64)
    assert model.sample("he", 40, temperature=1.0, seed=7) == (
        "luqdeu rqieeeiikxqlxdcl  kiwlkkd cncf rc"
    )
    assert model.sample("he", 20, temperature=0) == "k" * 20


def test_a_version_1_file_with_a_cell_is_refused(tmp_path):
    with np.load(DATA / "char_rnn_v1.npz", allow_pickle=False) as f:
        config = f["config"].tobytes().decode()
    rewrite(
        DATA / "char_rnn_v1.npz",
        tmp_path / "bad.npz",
        config=text(config.replace("{", '{"cell": "lstm", ', 1)),
    )
    with pytest.raises(ValueError, match="exactly the keys"):
        CharRNN.load(tmp_path / "bad.npz")


def test_files_record_the_cell(tmp_path):
    model = CharRNN("ab", 4, seed=0)
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert int(f["version"]) == rnnfast.models.FORMAT_VERSION == 2
        assert '"cell": "rnn"' in f["config"].tobytes().decode()


def test_cell_is_checked():
    with pytest.raises(ValueError, match="cell"):
        CharRNN("ab", 4, cell="transformer")
    with pytest.raises(ValueError, match="cell"):
        SequenceRegressor(hidden_size=4, cell="LSTM ")


@GATED
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_nonlinearity_is_the_elman_cells_only(cell):
    with pytest.raises(ValueError, match="nonlinearity"):
        CharRNN("ab", 4, cell=cell, nonlinearity="relu")


@pytest.mark.parametrize("cell", CELLS)
def test_char_rnn_of_each_cell_learns_and_round_trips(cell, tmp_path):
    text = "abcdefgh" * 40
    model = CharRNN(sorted(set(text)), 16, num_layers=2, cell=cell, seed=0)
    assert model.cell == cell
    losses = model.fit(text, steps=60, bptt=12, batch_size=4, lr=1e-2)
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    assert model.sample("abc", 8, temperature=0) == "defghabc"
    model.save(tmp_path / "m.npz")
    loaded = CharRNN.load(tmp_path / "m.npz")
    assert loaded.cell == cell and type(loaded.rnn) is type(model.rnn)
    assert repr(loaded) == repr(model)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v)
    ids = model.encode("abcdefg")[:, None]
    np.testing.assert_array_equal(loaded.forward(ids)[0], model.eval().forward(ids)[0])
    for seed in range(2):
        assert loaded.sample("a", 30, seed=seed) == model.sample("a", 30, seed=seed)


@pytest.mark.parametrize("cell", CELLS)
def test_sampling_steps_as_the_full_forward_does(cell):
    """sample's streaming steps carry the cell's whole state (an LSTM's h and c): at
    temperature 0 they pick each argmax of a forward over the text so far."""
    model = CharRNN("abcd", 8, num_layers=2, cell=cell, dtype=np.float64, seed=1).eval()
    out = model.sample("ab", 10, temperature=0)
    logits, _ = model.forward(model.encode("ab" + out)[:, None])
    expected = "".join(model.vocab[i] for i in np.argmax(logits[1:-1, 0], axis=1))
    assert out == expected


@pytest.mark.parametrize("cell", CELLS)
def test_the_state_carries_across_windows(cell):
    """forward(x, state) continues from a previous forward's state, whatever it holds."""
    model = CharRNN("abcd", 6, cell=cell, dtype=np.float64, seed=2).eval()
    ids = model.encode("abcdabcdbbca")[:, None]
    whole, _ = model.forward(ids)
    first, state = model.forward(ids[:5])
    second, _ = model.forward(ids[5:], state)
    np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_sequence_regressor_of_each_cell_learns_and_round_trips(cell, tmp_path):
    series = np.sin(np.arange(600) * 0.2)
    model = SequenceRegressor(hidden_size=12, cell=cell, seed=0)
    losses = model.fit(series, steps=80, bptt=20, batch_size=8, lr=1e-2)
    assert np.mean(losses[-5:]) < 0.2 * np.mean(losses[:5])
    model.save(tmp_path / "s.npz")
    loaded = SequenceRegressor.load(tmp_path / "s.npz")
    assert loaded.cell == cell
    np.testing.assert_array_equal(loaded.predict(series[:50]), model.predict(series[:50]))
