"""rnnfast.diagnostics: gradient norms against distance, decay rates, spectral radius,
saturation, and the sweeps behind ``rnnfast diagnose``."""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnnfast
from rnnfast import diagnostics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def brute_force_norms(x, w_ih, w_hh, b, g, nonlinearity):
    """||dL/dh_t|| for L = sum_b <g_b, h[T-1, b]>, by the chain rule one step at a time,
    written independently of the kernels."""
    T, B, _ = x.shape
    H = w_hh.shape[0]
    h = np.zeros((T, B, H))
    prev = np.zeros((B, H))
    for t in range(T):
        a = x[t] @ w_ih.T + prev @ w_hh.T + (0 if b is None else b)
        prev = h[t] = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
    d = g.copy()
    norms = [np.linalg.norm(d, axis=1).mean()]
    for t in range(T - 1, -1, -1):
        slope = 1 - h[t] ** 2 if nonlinearity == "tanh" else (h[t] > 0).astype(float)
        d = (d * slope) @ w_hh
        norms.append(np.linalg.norm(d, axis=1).mean())
    return np.array(norms), h


@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_gradient_norms_match_the_chain_rule(backend, nl):
    rng = np.random.default_rng(0)
    T, B, D, H = 30, 3, 5, 7
    x = rng.standard_normal((T, B, D))
    w_ih = rng.uniform(-0.5, 0.5, (H, D))
    w_hh = diagnostics.scaled_orthogonal(H, 1.2, seed=1)
    b = rng.uniform(-0.1, 0.1, H)
    result = diagnostics.gradient_norms(x, w_ih, w_hh, b, nonlinearity=nl, seed=7, backend=backend)
    g = np.random.default_rng(7).standard_normal((B, H))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    expected, h = brute_force_norms(x, w_ih, w_hh, b, g, nl)
    np.testing.assert_array_equal(result.distance, np.arange(T + 1))
    np.testing.assert_allclose(result.norm, expected, rtol=1e-9)
    np.testing.assert_allclose(result.states, h, rtol=1e-9, atol=1e-12)
    assert result.norm[0] == pytest.approx(1.0)


@pytest.mark.parametrize("scale", [0.5, 1.0, 1.3])
def test_linear_regime_decays_at_the_spectral_radius(scale):
    """With inputs so small that tanh is linear, each step back multiplies the gradient by
    scale * Q (Q orthogonal): the norm is exactly scale ** distance."""
    rng = np.random.default_rng(2)
    T, B, H = 40, 4, 16
    x = rng.standard_normal((T, B, H)) * 1e-9
    w_ih = np.eye(H)
    w_hh = diagnostics.scaled_orthogonal(H, scale, seed=3)
    result = diagnostics.gradient_norms(x, w_ih, w_hh)
    np.testing.assert_allclose(result.norm, scale ** np.arange(T + 1), rtol=1e-6)
    assert diagnostics.decay_rate(result) == pytest.approx(scale, rel=1e-6)


def test_gradient_norms_float32_model_weights():
    rnn = rnnfast.RNN(4, 8, seed=0)
    x = np.random.default_rng(0).standard_normal((12, 2, 4)).astype(np.float32)
    p = rnn.parameters()
    result = diagnostics.gradient_norms(
        x, p["weight_ih_l0"], p["weight_hh_l0"], p["bias_ih_l0"] + p["bias_hh_l0"]
    )
    assert result.states.dtype == np.float32
    assert result.norm.dtype == np.float64
    np.testing.assert_allclose(result.states, rnn(x)[0], rtol=1e-5, atol=1e-6)


def test_decay_rate():
    k = np.arange(20)
    assert diagnostics.decay_rate(3.0 * 0.5**k) == pytest.approx(0.5)
    assert diagnostics.decay_rate(2.0**k) == pytest.approx(2.0)
    assert diagnostics.decay_rate([1.0, 0.5, 0.0, 0.0]) == 0.0
    with_overflow = np.append(1.5**k, [np.inf, np.nan])
    assert diagnostics.decay_rate(with_overflow) == pytest.approx(1.5)
    assert math.isnan(diagnostics.decay_rate([np.inf, np.nan, 1.0]))
    with pytest.raises(ValueError, match="at least 2"):
        diagnostics.decay_rate([1.0])


def test_spectral_radius():
    assert diagnostics.spectral_radius(np.diag([0.3, -0.9, 0.5])) == pytest.approx(0.9)
    c, s = math.cos(0.4), math.sin(0.4)
    rotation = 0.7 * np.array([[c, -s], [s, c]])  # complex eigenvalues 0.7 e^(+-0.4i)
    assert diagnostics.spectral_radius(rotation) == pytest.approx(0.7)
    # Nilpotent: a large norm, but powers vanish, so the radius is 0.
    assert diagnostics.spectral_radius([[0.0, 5.0], [0.0, 0.0]]) == pytest.approx(0.0)
    assert diagnostics.spectral_radius(np.zeros((0, 0))) == 0.0
    with pytest.raises(ValueError, match="square"):
        diagnostics.spectral_radius(np.ones((2, 3)))
    with pytest.raises(ValueError, match="NaN"):
        diagnostics.spectral_radius([[np.nan]])
    with pytest.raises(TypeError, match="w_hh"):
        diagnostics.spectral_radius([["a"]])


def test_saturation():
    h = np.array([0.0, 0.5, 0.995, -0.999])
    assert diagnostics.saturation(h) == 0.5
    assert diagnostics.saturation(h, threshold=0.4) == 0.75
    assert diagnostics.saturation(np.array([0.0, -1.0, 2.0, 3.0]), "relu") == 0.5
    assert diagnostics.saturation(np.zeros((0, 3))) == 0.0
    with pytest.raises(ValueError, match="threshold"):
        diagnostics.saturation(h, threshold=1.0)
    with pytest.raises(ValueError, match="nonlinearity"):
        diagnostics.saturation(h, "sigmoid")


def test_scaled_orthogonal():
    w = diagnostics.scaled_orthogonal(12, 1.7, seed=5)
    np.testing.assert_allclose(np.linalg.svd(w, compute_uv=False), 1.7, rtol=1e-12)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(w)), 1.7, rtol=1e-10)
    np.testing.assert_array_equal(w, diagnostics.scaled_orthogonal(12, 1.7, seed=5))
    assert diagnostics.scaled_orthogonal(4, 1, seed=0, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="scale"):
        diagnostics.scaled_orthogonal(4, -1.0)
    with pytest.raises(TypeError, match="scale"):
        diagnostics.scaled_orthogonal(4, "big")


def test_scale_sweep_shows_vanishing_and_exploding():
    rows = diagnostics.scale_sweep(hidden=32, seq_len=60, batch=4, seed=0)
    assert [(r.nonlinearity, r.label) for r in rows] == [
        (nl, f"scale {s:g}") for nl in ("tanh", "relu") for s in (0.5, 1.0, 2.0)
    ]
    rate = {(r.nonlinearity, r.label): r.decay_rate for r in rows}
    for r in rows:
        assert r.spectral_radius == pytest.approx(float(r.label.split()[1]))
        assert r.norms.norm.shape == (61,)
    # Weak inputs: tanh is nearly linear, so the rate follows the radius.
    assert rate["tanh", "scale 0.5"] == pytest.approx(0.5, abs=0.05)
    assert 0.85 < rate["tanh", "scale 1"] < 1.0
    assert rate["tanh", "scale 2"] > 1.1  # exploding
    # ReLU passes gradients through about half its units: vanishing at radius 1 already.
    assert rate["relu", "scale 0.5"] < rate["relu", "scale 1"] < 0.85
    assert rate["relu", "scale 2"] > 1.1
    relu_flat = [r.saturation for r in rows if r.nonlinearity == "relu"]
    assert all(0.3 < f < 0.7 for f in relu_flat)  # about half the units are inactive


def test_strong_inputs_saturate_tanh_and_make_gradients_vanish():
    weak, strong = (
        diagnostics.scale_sweep(
            hidden=32, seq_len=60, scales=(1.5,), nonlinearities=("tanh",), input_scale=s
        )[0]
        for s in (0.1, 3.0)
    )
    assert strong.saturation > weak.saturation + 0.2
    assert strong.decay_rate < 1.0 < weak.decay_rate


def test_scale_sweep_rejects_bad_arguments():
    with pytest.raises(ValueError, match="scales"):
        diagnostics.scale_sweep(hidden=4, seq_len=5, scales=(-1.0,))
    with pytest.raises(ValueError, match="nonlinearity"):
        diagnostics.scale_sweep(hidden=4, seq_len=5, nonlinearities=("sigmoid",))
    with pytest.raises(ValueError, match="hidden"):
        diagnostics.scale_sweep(hidden=0)


def test_scale_sweep_takes_one_shot_iterables():
    """Every (nonlinearity, scale) row, also when both come as generators (read once)."""
    rows = diagnostics.scale_sweep(
        hidden=4,
        seq_len=5,
        scales=(s for s in (0.5, 1.0)),
        nonlinearities=(n for n in ("tanh", "relu")),
    )
    assert [(r.nonlinearity, r.label) for r in rows] == [
        ("tanh", "scale 0.5"),
        ("tanh", "scale 1"),
        ("relu", "scale 0.5"),
        ("relu", "scale 1"),
    ]


def test_model_diagnosis_per_layer():
    model = rnnfast.CharRNN("abc\n", hidden_size=8, num_layers=2, seed=0)
    ids = np.random.default_rng(0).integers(0, 4, (25, 3))
    rows = diagnostics.model_diagnosis(model, ids)
    assert [r.label for r in rows] == ["layer 0", "layer 1"]
    params = model.rnn.parameters()
    for k, r in enumerate(rows):
        assert r.spectral_radius == pytest.approx(
            diagnostics.spectral_radius(params[f"weight_hh_l{k}"])
        )
        assert r.norms.norm.shape == (26,)
        assert r.norms.states.shape == (25, 3, 8)
    # Layer 1 reads layer 0's states.
    x = rnnfast.one_hot(ids, 4)
    np.testing.assert_allclose(rows[1].norms.states, model.rnn(x)[0], rtol=1e-5, atol=1e-6)


def test_model_diagnosis_of_a_regressor_and_a_bare_rnn():
    reg = rnnfast.SequenceRegressor(hidden_size=6, seed=0)
    x = np.random.default_rng(1).standard_normal((10, 2, 1)).astype(np.float32)
    assert len(diagnostics.model_diagnosis(reg, x)) == 1
    rnn = rnnfast.RNN(1, 6, nonlinearity="relu", seed=0)
    (row,) = diagnostics.model_diagnosis(rnn, x)
    assert row.nonlinearity == "relu"
    with pytest.raises(ValueError, match="inputs"):
        diagnostics.model_diagnosis(reg, x[:, :, 0])
    with pytest.raises(TypeError, match="RNN"):
        diagnostics.model_diagnosis(object(), x)
    with pytest.raises(TypeError, match="vocabulary"):
        diagnostics.model_diagnosis(reg, np.zeros((3, 2), dtype=np.int64))


def test_plot_gradient_norms_writes_a_png(tmp_path):
    rows = diagnostics.scale_sweep(hidden=8, seq_len=10, batch=2, scales=(0.5, 2.0))
    path = tmp_path / "norms.png"
    diagnostics.plot_gradient_norms(rows, path, title="test")
    assert path.read_bytes().startswith(PNG_MAGIC)


# The gated cells: gradient norms through any layer's own backward.

GATED = pytest.mark.skipif(
    not (hasattr(rnnfast.nn, "LSTM") and hasattr(rnnfast.nn, "GRU")),
    reason="this rnnfast has no gated layers",
)


@pytest.mark.parametrize("nl", ["tanh", "relu"])
def test_layer_gradient_norms_of_an_rnn_are_the_chain_rules(nl):
    rnn = rnnfast.RNN(3, 5, nonlinearity=nl, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).standard_normal((12, 4, 3))
    p = rnn.parameters()
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    g = np.random.default_rng(3).standard_normal((4, 5))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    expected, h = brute_force_norms(x, p["weight_ih_l0"], p["weight_hh_l0"], b, g, nl)
    rnn.train()
    before = {k: v + 1.0 for k, v in rnn.grads.items()}
    for k, v in before.items():
        rnn.grads[k][...] = v
    result = diagnostics.layer_gradient_norms(rnn, x, seed=3)
    np.testing.assert_allclose(result.norm, expected, rtol=1e-12)
    np.testing.assert_allclose(result.states, h, rtol=1e-12, atol=1e-14)
    assert rnn.training  # mode and accumulated gradients left as they were
    for k, v in before.items():
        np.testing.assert_array_equal(rnn.grads[k], v)


def test_layer_gradient_norms_checks_the_layer():
    x = np.zeros((3, 2, 2))
    with pytest.raises(ValueError, match="one-layer"):
        diagnostics.layer_gradient_norms(rnnfast.RNN(2, 3, 2, dtype=np.float64), x)
    with pytest.raises(ValueError, match="one-layer"):
        diagnostics.layer_gradient_norms(rnnfast.RNN(2, 3, bidirectional=True), x)


def torch_state_gradient_norms(layer, x, g):
    """||dL/d(state_t)|| by torch's autograd, through torch's cells one step at a time."""
    torch = pytest.importorskip("torch")
    lstm = isinstance(layer, rnnfast.nn.LSTM)
    H = layer.hidden_size
    cls = torch.nn.LSTMCell if lstm else torch.nn.GRUCell
    cell = cls(x.shape[2], H, dtype=torch.float64)
    p = layer.parameters()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(torch.from_numpy(p[f"{name}_l0"]))
    T, B = x.shape[:2]
    # A zero perturbation added to the state entering each step: its gradient is the state's
    # (an LSTM's h and c as two separate inputs of the next step, as the layer carries them).
    eps = [
        [
            torch.zeros(B, H, dtype=torch.float64, requires_grad=True)
            for _ in range(2 if lstm else 1)
        ]
        for _ in range(T)
    ]
    state = [torch.zeros(B, H, dtype=torch.float64) for _ in eps[0]]
    for t in range(T):
        state = [s + e for s, e in zip(state, eps[t], strict=True)]
        out = cell(torch.from_numpy(x[t]), tuple(state) if lstm else state[0])
        state = list(out) if lstm else [out]
    loss = (state[0] * torch.from_numpy(g)).sum()
    grads = torch.autograd.grad(loss, [e for es in eps for e in es])
    per_state = np.array([gr.numpy() for gr in grads]).reshape(T, -1, B, H)
    norms = np.sqrt((per_state**2).sum(axis=(1, 3))).mean(axis=1)  # the state entering step t
    return np.concatenate([[1.0], norms[::-1]])


@GATED
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_layer_gradient_norms_of_the_gated_cells_match_torch(cell):
    layer = getattr(rnnfast.nn, cell)(3, 5, dtype=np.float64, seed=1)
    x = np.random.default_rng(2).standard_normal((9, 4, 3))
    g = np.random.default_rng(5).standard_normal((4, 5))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    result = diagnostics.layer_gradient_norms(layer, x, seed=5)
    np.testing.assert_allclose(result.norm, torch_state_gradient_norms(layer, x, g), rtol=1e-10)
    np.testing.assert_allclose(result.states, layer(x)[0], rtol=1e-12)


@GATED
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_model_diagnosis_of_a_gated_model_per_layer(cell, tmp_path):
    model = rnnfast.CharRNN("abc\n", hidden_size=6, num_layers=2, cell=cell, seed=0)
    ids = np.random.default_rng(0).integers(0, 4, (15, 3))
    rows = diagnostics.model_diagnosis(model, ids)
    assert [(r.label, r.cell) for r in rows] == [("layer 0", cell), ("layer 1", cell)]
    assert all(math.isnan(r.spectral_radius) and r.norms.norm.shape == (16,) for r in rows)
    x = rnnfast.one_hot(ids, 4)
    np.testing.assert_allclose(rows[1].norms.states, model.rnn(x)[0], rtol=1e-5, atol=1e-6)
    diagnostics.plot_cell_comparison({"a": rows, "b": rows[:1]}, tmp_path / "c.png", title="t")
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)


def test_plot_cell_comparison_writes_a_png(tmp_path):
    model = rnnfast.CharRNN("abc", hidden_size=4, seed=0)
    rows = diagnostics.model_diagnosis(model, np.zeros((6, 2), dtype=np.int64))
    assert rows[0].cell == "rnn"
    diagnostics.plot_cell_comparison({"init": rows}, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
