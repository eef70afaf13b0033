"""Truncated BPTT: windows and streams, the state carried across windows, gradients stopped at
each window's start, epochs, callbacks, clipping, and a model trained the way a user would."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import rnnfast
from rnnfast.train import Optimizer, Progress, batchify, bptt_windows, truncated_bptt


class Recorder(Optimizer):
    """Records a copy of the gradients at every step and changes nothing."""

    def __init__(self, params, grads):
        super().__init__(params, grads, lr=0.0)
        self.seen: list[dict[str, np.ndarray]] = []

    def step(self) -> None:
        self.seen.append({k: np.array(self.grads[k]) for k in self.params})
        super().step()

    def _update(self, p, g, state) -> None:
        pass


class StateSpy:
    """Wraps a model and records the initial state each forward receives."""

    def __init__(self, model):
        self.model = model
        self.h0s: list = []

    def forward(self, x, h0=None):
        self.h0s.append(None if h0 is None else np.array(h0))
        return self.model.forward(x, h0)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_batchify_cuts_contiguous_streams():
    out = batchify(np.arange(11), 3)  # 11 // 3 = 3 steps; the last 2 items dropped
    np.testing.assert_array_equal(out, [[0, 3, 6], [1, 4, 7], [2, 5, 8]])
    feats = batchify(np.arange(20).reshape(10, 2), 2)
    assert feats.shape == (5, 2, 2)
    np.testing.assert_array_equal(feats[:, 1], np.arange(10, 20).reshape(5, 2))
    with pytest.raises(ValueError, match="too short for batch_size=4"):
        batchify(np.arange(3), 4)


def test_bptt_windows():
    assert bptt_windows(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert bptt_windows(3, 5) == [slice(0, 3)]
    with pytest.raises(ValueError, match="bptt must be >= 1"):
        bptt_windows(10, 0)


def problem(T=6, B=2, D=2, H=3, seed=0):
    rng = np.random.default_rng(seed)
    rnn = rnnfast.RNN(D, H, 2, dtype=np.float64, seed=seed)
    return rnn, rng.standard_normal((T, B, D)), rng.standard_normal((T, B, H))


def test_state_is_carried_and_gradients_stop_at_each_window():
    rnn, x, y = problem()
    opt = Recorder(rnn.parameters(), rnn.grads)
    result = truncated_bptt(rnn, x, y, rnnfast.mse, opt, bptt=3)

    out, h_n = rnn(x)  # the windows' forward passes chain into the full sequence's
    assert_close(result.state, h_n, 1e-14, "final state")
    assert result.losses == [
        pytest.approx(rnnfast.mse(out[w], y[w])[0]) for w in (np.s_[:3], np.s_[3:])
    ]

    # The second window's gradients are those of a forward starting at the carried state,
    # taken as a constant...
    h_mid = rnn(x[:3])[1]
    rnn.zero_grad()
    out2, _ = rnn(x[3:], h_mid)
    rnn.backward(rnnfast.mse(out2, y[3:])[1])
    for k, g in rnn.grads.items():
        assert_close(opt.seen[1][k], g, 1e-13, k)
    # ... not the full-BPTT gradients of the same loss, which reach back into the first window.
    rnn.zero_grad()
    full, _ = rnn(x)
    d = np.zeros_like(full)
    d[3:] = rnnfast.mse(full[3:], y[3:])[1]
    rnn.backward(d)
    assert not np.allclose(opt.seen[1]["weight_hh_l0"], rnn.grads["weight_hh_l0"])


def test_steps_start_new_epochs_from_the_initial_state():
    rnn, x, y = problem()
    spy = StateSpy(rnn)
    s0 = np.full((2, 2, 3), 0.5)
    result = truncated_bptt(
        spy, x, y, rnnfast.mse, Recorder(rnn.parameters(), rnn.grads), bptt=3, steps=5, state=s0
    )
    assert len(result.losses) == 5
    assert result.losses[0] == result.losses[2] == result.losses[4]  # nothing learned (lr=0)
    for i, h0 in enumerate(spy.h0s):
        assert (h0 is s0 or np.array_equal(h0, s0)) == (i % 2 == 0), i


def test_callback_reports_progress_and_can_stop():
    rnn, x, y = problem(T=12)
    seen: list[Progress] = []

    def callback(p: Progress) -> bool:
        seen.append(p)
        return p.step == 3

    opt = rnnfast.SGD(rnn.parameters(), rnn.grads, lr=0.01)
    result = truncated_bptt(rnn, x, y, rnnfast.mse, opt, bptt=2, steps=100, callback=callback)
    assert [p.step for p in seen] == [1, 2, 3]
    assert len(result.losses) == 3 and opt.steps == 3
    assert [p.tokens for p in seen] == [4, 8, 12]  # bptt * batch per step
    assert [p.loss for p in seen] == result.losses
    assert all(p.tokens_per_sec > 0 and p.elapsed > 0 for p in seen)


def test_max_grad_norm_clips_before_every_step():
    rnn, x, y = problem()
    y = 100 * y  # large gradients
    opt = Recorder(rnn.parameters(), rnn.grads)
    truncated_bptt(rnn, x, y, rnnfast.mse, opt, bptt=3, max_grad_norm=0.5)
    for grads in opt.seen:
        norm = np.sqrt(sum(np.sum(g**2) for g in grads.values()))
        assert norm == pytest.approx(0.5, rel=1e-5)


def test_bad_max_grad_norm_fails_before_any_step():
    rnn, x, y = problem()
    opt = Recorder(rnn.parameters(), rnn.grads)
    with pytest.raises(ValueError, match="max_grad_norm"):
        truncated_bptt(rnn, x, y, rnnfast.mse, opt, bptt=3, max_grad_norm=-1.0)
    assert opt.seen == []  # no update ran
    assert all(not g.any() for g in rnn.grads.values())  # nor a forward and backward


def test_checks_the_shapes():
    rnn, x, y = problem()
    opt = Recorder(rnn.parameters(), rnn.grads)
    with pytest.raises(ValueError, match="same"):
        truncated_bptt(rnn, x, y[:5], rnnfast.mse, opt, bptt=3)
    with pytest.raises(ValueError, match=r"\(T, B, \.\.\.\)"):
        truncated_bptt(rnn, x[:, 0, 0], y[:, 0, 0], rnnfast.mse, opt, bptt=3)


def test_trains_a_model_with_memory():
    """A user's loop: an RNN learns y[t] = x[t - 1], which only its state can remember,
    through a loss on the first of its hidden units."""
    rng = np.random.default_rng(1)
    T, B = 600, 4
    x = rng.uniform(-0.5, 0.5, (T, B, 1))
    y = np.concatenate([np.zeros((1, B, 1)), x[:-1]])
    rnn = rnnfast.RNN(1, 8, dtype=np.float64, seed=1)

    def first_unit_mse(out, target):
        loss, d = rnnfast.mse(out[..., :1], target)
        return loss, np.concatenate([d, np.zeros_like(out[..., 1:])], axis=-1)

    opt = rnnfast.Adam(rnn.parameters(), rnn.grads, lr=0.02)
    result = truncated_bptt(rnn, x, y, first_unit_mse, opt, bptt=20, steps=240)
    baseline = np.mean(y**2)  # predicting 0
    assert np.mean(result.losses[:5]) > 0.5 * baseline
    assert np.mean(result.losses[-10:]) < 0.1 * baseline


@pytest.mark.parametrize(
    "vocab", ["cab", ["\x00", "é", " ", "ÿ"], ["\x00", "é", "🙂", " "], ["z", "\U0010ffff", "a"]]
)
def test_encode_finds_every_character_and_names_the_first_unknown(vocab):
    """Vocabularies of small code points (encode's table) and of large ones (its search)."""
    model = rnnfast.CharRNN(vocab, 4, seed=0)
    text = "".join(vocab[i] for i in [2, 0, 1, 1, 0, 2])
    ids = model.encode(text)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [2, 0, 1, 1, 0, 2])
    for bad in ["\x01", "d", "\u00fe", "\uffff", "\U0001f643"]:
        with pytest.raises(ValueError, match=r"text\[2\] = .* is not in the model's vocabulary"):
            model.encode(text[:2] + bad + text[2:])
