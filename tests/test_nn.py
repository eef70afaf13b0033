"""rnnfast.nn without PyTorch: RNN, RNNCell, Linear, Embedding, one_hot.

Parameters and state dicts, shapes and layouts, ``lengths``, dropout, the streaming step,
argument checking, and finite-difference checks of every backward in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, finite_difference_gradient

import rnnfast
from rnnfast.nn import IncompatibleKeys, Module

F64 = np.float64


def make_rnn(D=3, H=4, L=2, dtype=F64, seed=0, **kw) -> rnnfast.RNN:
    return rnnfast.RNN(D, H, L, dtype=dtype, seed=seed, **kw)


def randn(rng, *shape, dtype=F64):
    return rng.standard_normal(shape).astype(dtype)


def check_backward(module: Module, inputs: dict, loss, analytic: dict, min_grad=1e-3) -> None:
    """The analytic gradients of every parameter of ``module`` (``module.grads``) and of every
    array in ``inputs`` (``analytic``, same keys) match central differences of ``loss()``."""
    targets = {**{f"param {k}": v for k, v in module.parameters().items()}, **inputs}
    grads = {**{f"param {k}": v for k, v in module.grads.items()}, **analytic}
    for name, arr in targets.items():
        numeric = finite_difference_gradient(loss, arr)
        assert np.abs(numeric).max() > min_grad, f"{name}: ~0 gradient proves nothing"
        assert_close(grads[name], numeric, 1e-6, name)


# --------------------------------------------------------------------------------------------
# Parameters, state dicts, grads


def test_parameter_names_shapes_and_init_are_pytorchs():
    rnn = rnnfast.RNN(3, 5, num_layers=2, bidirectional=True, seed=0)
    expected = {}
    for layer, d_in in ((0, 3), (1, 10)):
        for sfx in ("", "_reverse"):
            expected |= {
                f"weight_ih_l{layer}{sfx}": (5, d_in),
                f"weight_hh_l{layer}{sfx}": (5, 5),
                f"bias_ih_l{layer}{sfx}": (5,),
                f"bias_hh_l{layer}{sfx}": (5,),
            }
    sd = rnn.state_dict()
    assert list(sd) == list(expected)  # PyTorch's order too
    assert {k: v.shape for k, v in sd.items()} == expected
    assert all(v.dtype == np.float32 for v in sd.values())
    assert list(rnnfast.RNN(3, 5, bias=False).state_dict()) == ["weight_ih_l0", "weight_hh_l0"]


def test_init_is_uniform_within_one_over_sqrt_hidden_size():
    H = 64
    bound = 1 / np.sqrt(H)
    for k, v in rnnfast.RNN(32, H, 2, seed=0).state_dict().items():
        assert np.abs(v).max() <= bound, k
        # U(-b, b) has mean 0 and standard deviation b / sqrt(3)
        assert abs(v.mean()) < 0.2 * bound, k
        assert abs(v.std() / (bound / np.sqrt(3)) - 1) < 0.15, k


def test_seed_makes_init_reproducible_across_dtypes():
    a, b = make_rnn(seed=7), make_rnn(seed=7)
    c = make_rnn(seed=8)
    f32 = make_rnn(seed=7, dtype=np.float32)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
        assert not np.array_equal(v, c.state_dict()[k])
        np.testing.assert_array_equal(v.astype(np.float32), f32.state_dict()[k])


def test_state_dict_is_a_copy_and_parameters_are_live():
    rnn = make_rnn()
    sd = rnn.state_dict()
    sd["weight_hh_l0"][:] = 0
    assert rnn.parameters()["weight_hh_l0"].any()
    live = rnn.parameters()["weight_hh_l0"]
    rnn.load_state_dict(sd)
    assert live is rnn.parameters()["weight_hh_l0"]  # loaded in place: optimizers stay valid
    assert not live.any()


@pytest.mark.parametrize(
    "make",
    [
        lambda: rnnfast.RNN(5, 33, num_layers=2, bidirectional=True, seed=0),
        lambda: rnnfast.RNNCell(65, 100, seed=0),
        lambda: rnnfast.nn.Linear(7, 3, seed=0),
        lambda: rnnfast.nn.Embedding(11, 6, seed=0),
    ],
    ids=["RNN", "RNNCell", "Linear", "Embedding"],
)
def test_parameters_and_grads_start_on_a_cache_line_and_stay_there(make):
    """Every parameter and gradient array is C-contiguous and 64-byte aligned (the streaming
    step's vector loads then never straddle two cache lines), and stays the same array through
    load_state_dict and an optimizer step."""
    module = make()
    arrays = {**module.parameters(), **{f"grad {k}": v for k, v in module.grads.items()}}
    before = {name: id(a) for name, a in arrays.items()}
    sd = {k: v + 1 for k, v in module.state_dict().items()}
    module.load_state_dict(sd)
    for g in module.grads.values():
        g[...] = 1
    rnnfast.SGD(module.parameters(), module.grads, lr=0.1).step()
    arrays = {**module.parameters(), **{f"grad {k}": v for k, v in module.grads.items()}}
    for name, a in arrays.items():
        assert id(a) == before[name], name
        assert a.ctypes.data % rnnfast.nn.module.PARAMETER_ALIGNMENT == 0, name
        assert a.flags.c_contiguous and a.flags.writeable, name
    for name, value in module.state_dict().items():
        np.testing.assert_allclose(value, sd[name] - 0.1, rtol=1e-6, err_msg=name)


def test_load_state_dict_checks_every_key_and_shape_and_changes_nothing_on_error():
    rnn = make_rnn()
    before = rnn.state_dict()
    good = make_rnn(seed=1).state_dict()

    missing = {k: v for k, v in good.items() if k != "bias_hh_l1"}
    with pytest.raises(ValueError, match=r"missing keys.*bias_hh_l1"):
        rnn.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys.*extra"):
        rnn.load_state_dict({**good, "extra": np.zeros(1)})
    wrong = {**good, "weight_ih_l1": np.zeros((4, 3))}
    with pytest.raises(ValueError, match=r"weight_ih_l1.*\(4, 3\).*\(4, 4\)"):
        rnn.load_state_dict(wrong)
    with pytest.raises(ValueError, match="numeric"):
        rnn.load_state_dict({**good, "bias_ih_l0": np.array(["a"] * 4)})
    for k, v in rnn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])

    result = rnn.load_state_dict(missing, strict=False)
    assert result == IncompatibleKeys(["bias_hh_l1"], [])
    np.testing.assert_array_equal(rnn.parameters()["weight_ih_l0"], good["weight_ih_l0"])

    f32 = make_rnn(dtype=np.float32)
    f32.load_state_dict(good)  # cast, as torch's copy_ does
    assert f32.parameters()["weight_hh_l0"].dtype == np.float32
    np.testing.assert_array_equal(
        f32.state_dict()["weight_hh_l0"], good["weight_hh_l0"].astype(np.float32)
    )


def test_grads_accumulate_until_zero_grad():
    rnn = make_rnn()
    assert {k: v.shape for k, v in rnn.grads.items()} == {
        k: v.shape for k, v in rnn.state_dict().items()
    }
    x = randn(np.random.default_rng(0), 5, 2, 3)
    out, _ = rnn(x)
    rnn.backward(np.ones_like(out))
    once = {k: v.copy() for k, v in rnn.grads.items()}
    assert all(v.any() for v in once.values())
    rnn.backward(np.ones_like(out))
    for k, v in rnn.grads.items():
        assert_close(v, 2 * once[k], 1e-14, k)
    rnn.zero_grad()
    assert not any(v.any() for v in rnn.grads.values())


def test_train_eval_and_repr():
    rnn = make_rnn(L=3, dropout=0.5, bidirectional=True)
    assert rnn.training
    assert rnn.eval() is rnn and not rnn.training
    assert rnn.train().training
    assert repr(rnn) == ("RNN(3, 4, num_layers=3, dropout=0.5, bidirectional=True, dtype=float64)")
    assert (
        repr(rnnfast.Linear(2, 3, bias=False))
        == "Linear(in_features=2, out_features=3, bias=False)"
    )


# --------------------------------------------------------------------------------------------
# Shapes and layouts


def test_shapes_batch_first_and_unbatched_agree():
    rng = np.random.default_rng(1)
    T, B, D, H, L = 5, 3, 3, 4, 2
    rnn = make_rnn(D, H, L, bidirectional=True)
    x = randn(rng, T, B, D)
    h0 = randn(rng, 2 * L, B, H)
    g = randn(rng, T, B, 2 * H)
    g_n = randn(rng, 2 * L, B, H)
    out, h_n = rnn(x, h0)
    assert out.shape == (T, B, 2 * H) and h_n.shape == (2 * L, B, H)
    dx, dh0 = rnn.backward(g, g_n)
    assert dx.shape == x.shape and dh0.shape == h0.shape

    bf = make_rnn(D, H, L, bidirectional=True, batch_first=True)
    out_bf, h_n_bf = bf(x.swapaxes(0, 1), h0)  # h0 stays (L * dirs, B, H)
    assert_close(out_bf, out.swapaxes(0, 1), 1e-14, "output")
    assert_close(h_n_bf, h_n, 1e-14, "h_n")
    dx_bf, dh0_bf = bf.backward(g.swapaxes(0, 1), g_n)
    assert_close(dx_bf, dx.swapaxes(0, 1), 1e-14, "dx")
    assert_close(dh0_bf, dh0, 1e-14, "dh0")

    for b in range(B):  # unbatched: every sequence alone
        out1, h_n1 = rnn(x[:, b], h0[:, b])
        assert out1.shape == (T, 2 * H) and h_n1.shape == (2 * L, H)
        assert_close(out1, out[:, b], 1e-14, "unbatched output")
        assert_close(h_n1, h_n[:, b], 1e-14, "unbatched h_n")
        dx1, dh01 = rnn.backward(g[:, b], g_n[:, b])
        assert_close(dx1, dx[:, b], 1e-13, "unbatched dx")
        assert_close(dh01, dh0[:, b], 1e-13, "unbatched dh0")


def test_outputs_are_not_aliased_with_what_backward_needs():
    rng = np.random.default_rng(2)
    rnn = make_rnn(L=1)
    x = randn(rng, 4, 2, 3)
    g = randn(rng, 4, 2, 4)
    rnn(x)
    expected = rnn.backward(g)
    rnn.zero_grad()
    out2, h_n2 = rnn(x)
    out2[:] = 7
    h_n2[:] = 7
    x[:] = 7  # the input too
    for a, b in zip(rnn.backward(g), expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_backends_agree(backend):
    rng = np.random.default_rng(3)
    T, B, D, H = 6, 3, 3, 5
    x = randn(rng, T, B, D)
    g = randn(rng, T, B, 2 * H)
    lengths = [6, 2, 4]
    results = {}
    for be in ("numpy", backend):
        rnn = make_rnn(D, H, 2, bidirectional=True, nonlinearity="relu", backend=be)
        out, h_n = rnn(x, None, lengths)
        dx, dh0 = rnn.backward(g, h_n)
        results[be] = (out, h_n, dx, dh0, *rnn.grads.values())
    for a, b in zip(results["numpy"], results[backend], strict=True):
        assert_close(a, b, 1e-12)


# --------------------------------------------------------------------------------------------
# lengths


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lengths_act_like_running_each_sequence_alone(bidirectional):
    """With lengths, each sequence's outputs, final states and gradients equal those of that
    sequence run alone, unpadded; outputs and dx are zero on the padding, whose values (NaN
    here) never matter."""
    rng = np.random.default_rng(4)
    T, D, H, L = 6, 3, 4, 2
    lengths = np.array([6, 1, 3, 5])
    B = len(lengths)
    dirs = 2 if bidirectional else 1
    rnn = make_rnn(D, H, L, bidirectional=bidirectional)
    x = randn(rng, T, B, D)
    valid = np.arange(T)[:, None] < lengths
    x[~valid] = np.nan
    h0 = randn(rng, L * dirs, B, H)
    g = randn(rng, T, B, dirs * H)
    g[~valid] = np.nan  # gradients of padded outputs are ignored too
    g_n = randn(rng, L * dirs, B, H)

    out, h_n = rnn(x, h0, lengths)
    dx, dh0 = rnn.backward(g, g_n)
    grads = {k: v.copy() for k, v in rnn.grads.items()}
    assert np.isfinite(out).all() and np.isfinite(dx).all()
    assert not out[~valid].any() and not dx[~valid].any()

    summed = {k: np.zeros_like(v) for k, v in grads.items()}
    for b, n in enumerate(lengths):
        rnn.zero_grad()
        out_b, h_n_b = rnn(x[:n, b : b + 1], h0[:, b : b + 1])
        dx_b, dh0_b = rnn.backward(g[:n, b : b + 1], g_n[:, b : b + 1])
        assert_close(out[:n, b], out_b[:, 0], 1e-14, f"output of sequence {b}")
        assert_close(h_n[:, b], h_n_b[:, 0], 1e-14, f"h_n of sequence {b}")
        assert_close(dx[:n, b], dx_b[:, 0], 1e-13, f"dx of sequence {b}")
        assert_close(dh0[:, b], dh0_b[:, 0], 1e-13, f"dh0 of sequence {b}")
        for k, v in rnn.grads.items():
            summed[k] += v
    for k, v in grads.items():
        assert_close(v, summed[k], 1e-12, k)


def test_full_lengths_equal_no_lengths():
    rng = np.random.default_rng(5)
    rnn = make_rnn(bidirectional=True)
    x = randn(rng, 5, 3, 3)
    out, h_n = rnn(x)
    out_l, h_n_l = rnn(x, None, [5, 5, 5])
    assert_close(out_l, out, 1e-15)
    assert_close(h_n_l, h_n, 1e-15)


# --------------------------------------------------------------------------------------------
# Finite differences (float64)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("lengths", [None, [4, 2, 3]], ids=["full", "lengths"])
def test_two_layer_bidirectional_rnn_matches_finite_differences(nonlinearity, lengths):
    rng = np.random.default_rng(6)
    T, B, D, H, L = 4, 3, 3, 3, 2
    rnn = make_rnn(D, H, L, bidirectional=True, nonlinearity=nonlinearity, seed=6)
    x = randn(rng, T, B, D)
    h0 = randn(rng, 2 * L, B, H)
    g = randn(rng, T, B, 2 * H)
    g_n = randn(rng, 2 * L, B, H)

    def loss() -> float:
        out, h_n = rnn(x, h0, lengths)
        return float(np.sum(out * g) + np.sum(h_n * g_n))

    loss()
    dx, dh0 = rnn.backward(g, g_n)
    check_backward(rnn, {"x": x, "h0": h0}, loss, {"x": dx, "h0": dh0})


def test_dropout_backward_matches_finite_differences_with_the_same_mask():
    rng = np.random.default_rng(7)
    T, B, D, H, L = 4, 2, 3, 4, 3
    rnn = make_rnn(D, H, L, dropout=0.3)
    x = randn(rng, T, B, D)
    g = randn(rng, T, B, H)
    rng_state = rnn._rng.bit_generator.state

    def loss() -> float:
        rnn._rng.bit_generator.state = rng_state  # the same masks at every evaluation
        return float(np.sum(rnn(x)[0] * g))

    loss()
    dx, _ = rnn.backward(g)
    check_backward(rnn, {"x": x}, loss, {"x": dx})


# --------------------------------------------------------------------------------------------
# Dropout


def test_dropout_only_in_training_seeded_and_scaled():
    rng = np.random.default_rng(8)
    T, B, D, H = 20, 50, 3, 16
    x = randn(rng, T, B, D, dtype=np.float32)
    plain = rnnfast.RNN(D, H, 2, seed=1)
    a = rnnfast.RNN(D, H, 2, dropout=0.5, seed=1)
    b = rnnfast.RNN(D, H, 2, dropout=0.5, seed=1)
    out_a, out_b = a(x)[0], b(x)[0]
    np.testing.assert_array_equal(out_a, out_b)  # same seed, same masks
    assert not np.allclose(out_a, plain(x)[0])
    assert not np.array_equal(a(x)[0], out_a)  # a new mask every forward
    np.testing.assert_array_equal(a.eval()(x)[0], plain(x)[0])

    mask = a.train()._dropout_mask((100_000,))
    assert abs(np.mean(mask == 0) - 0.5) < 0.01
    assert set(np.unique(mask)) == {0.0, 2.0}
    with pytest.warns(UserWarning, match="num_layers=1"):
        rnnfast.RNN(D, H, 1, dropout=0.2)


# --------------------------------------------------------------------------------------------
# Streaming: RNNCell and step


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_step_and_cell_agree_with_the_full_forward(nonlinearity, bias):
    rng = np.random.default_rng(9)
    T, B, D, H, L = 7, 3, 4, 5, 3
    rnn = rnnfast.RNN(D, H, L, nonlinearity=nonlinearity, bias=bias, seed=2)
    x = randn(rng, T, B, D, dtype=np.float32)
    h0 = randn(rng, L, B, H, dtype=np.float32)
    out, h_n = rnn(x, h0)

    cells = [
        rnnfast.RNNCell(D if k == 0 else H, H, bias=bias, nonlinearity=nonlinearity)
        for k in range(L)
    ]
    sd = rnn.state_dict()
    for k, cell in enumerate(cells):
        cell.load_state_dict({name: sd[f"{name}_l{k}"] for name in cell.state_dict()})

    h = h0
    hs = list(h0)
    for t in range(T):
        y, h = rnn.step(x[t], h)
        assert_close(y, out[t], 1e-6, f"step output {t}")
        inp = x[t]
        for k, cell in enumerate(cells):
            hs[k] = inp = cell(inp, hs[k])
        assert_close(inp, out[t], 1e-6, f"cell output {t}")
    assert_close(h, h_n, 1e-6, "h after the last step")

    y0, _ = rnn.step(x[0])  # h=None is zeros
    assert_close(y0, rnn(x[:1])[0][0], 1e-6, "step from zeros")
    y_u, h_u = rnn.step(x[0, 1], h0[:, 1])  # unbatched
    assert y_u.shape == (H,) and h_u.shape == (L, H)
    assert_close(y_u, rnn(x[:1, 1], h0[:, 1])[0][0], 1e-6, "unbatched step")


def test_step_refuses_bidirectional_and_checks_shapes():
    rnn = make_rnn(bidirectional=True)
    with pytest.raises(ValueError, match="bidirectional"):
        rnn.step(np.zeros((2, 3)))
    rnn = make_rnn()
    with pytest.raises(ValueError, match="x must have shape"):
        rnn.step(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"h must have shape .* = \(2, 2, 4\)"):
        rnn.step(np.zeros((2, 3)), np.zeros((1, 2, 4)))


def test_state_is_also_accepted_as_hx_like_pytorch():
    """torch's layers name the initial state ``hx``: rnn(x, hx=h), cell(x, hx=h); positional
    and the old keywords still work, and giving the state twice is a TypeError."""
    rng = np.random.default_rng(3)
    rnn = make_rnn()
    x = rng.standard_normal((5, 2, 3))
    h0 = rng.standard_normal((2, 2, 4))
    want_out, want_h = rnn(x, h0)
    for kwargs in ({"hx": h0}, {"h0": h0}):
        out, h_n = rnn(x, **kwargs)
        np.testing.assert_array_equal(out, want_out)
        np.testing.assert_array_equal(h_n, want_h)
    cell = rnnfast.RNNCell(3, 4, dtype=F64, seed=0)
    want = cell(x[0], h0[0])
    np.testing.assert_array_equal(cell(x[0], hx=h0[0]), want)
    np.testing.assert_array_equal(cell(x[0], h=h0[0]), want)
    with pytest.raises(TypeError, match="hx"):
        rnn(x, h0, hx=h0)
    with pytest.raises(TypeError, match="hx"):
        cell(x[0], h0[0], hx=h0[0])


def test_rnn_is_a_subclass_of_the_shared_recurrent_base():
    """RNNBase carries the layer loop; a cell subclass gives its gate rows and its calls."""
    rnn = make_rnn()
    assert isinstance(rnn, rnnfast.nn.RNNBase)
    assert rnnfast.RNN._GATES == 1
    assert rnn.parameters()["weight_hh_l0"].shape == (rnn._GATES * 4, 4)


def test_cell_backward_matches_finite_differences():
    rng = np.random.default_rng(10)
    cell = rnnfast.RNNCell(3, 4, dtype=F64, seed=0)
    x = randn(rng, 2, 3)
    h = randn(rng, 2, 4)
    g = randn(rng, 2, 4)

    def loss() -> float:
        return float(np.sum(cell(x, h) * g))

    loss()
    dx, dh = cell.backward(g)
    check_backward(cell, {"x": x, "h": h}, loss, {"x": dx, "h": dh})
    assert [k for k in cell.state_dict()] == ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    cell(x[0])  # unbatched, h = zeros
    dx1, dh1 = cell.backward(g[0])
    assert dx1.shape == (3,) and dh1.shape == (4,)


def test_cell_backward_ignores_later_changes_to_its_arrays(backend):
    """backward uses the values of the forward call, whatever the caller then does in place to
    x, h or the returned h' (the plain-array fast path keeps no reference to them)."""
    rng = np.random.default_rng(12)
    cell = rnnfast.RNNCell(3, 4, dtype=F64, seed=0, backend=backend)
    x, h, g = randn(rng, 2, 3), randn(rng, 2, 4), randn(rng, 2, 4)
    cell(x.copy(), h.copy())
    expected = cell.backward(g)
    expected_grads = {k: v.copy() for k, v in cell.grads.items()}  # dw_ih, dw_hh read x, h
    cell.zero_grad()
    x2, h2 = x.copy(), h.copy()
    out = cell(x2, h2)
    x2.fill(7.0)
    h2.fill(-3.0)
    out.fill(0.5)
    for got, want in zip(cell.backward(g), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    for name, want in expected_grads.items():
        np.testing.assert_array_equal(cell.grads[name], want, err_msg=name)


# --------------------------------------------------------------------------------------------
# Linear, Embedding, one_hot


def test_linear_matches_finite_differences_on_any_leading_shape():
    rng = np.random.default_rng(11)
    lin = rnnfast.Linear(4, 3, dtype=F64, seed=0)
    x = randn(rng, 2, 5, 4)
    g = randn(rng, 2, 5, 3)
    y = lin(x)
    assert y.shape == (2, 5, 3)
    assert_close(y, x @ lin.parameters()["weight"].T + lin.parameters()["bias"], 1e-14)

    def loss() -> float:
        return float(np.sum(lin(x) * g))

    loss()
    dx = lin.backward(g)
    check_backward(lin, {"x": x}, loss, {"x": dx})
    bound = 1 / np.sqrt(4)
    assert all(np.abs(v).max() <= bound for v in lin.state_dict().values())


def test_embedding_lookup_and_gradient():
    emb = rnnfast.Embedding(5, 3, padding_idx=-1, dtype=F64, seed=0)
    assert emb.padding_idx == 4
    w = emb.parameters()["weight"]
    assert not w[4].any() and w[:4].all()
    ids = np.array([[0, 2, 2], [4, 0, 2]])
    out = emb(ids)
    np.testing.assert_array_equal(out, w[ids])
    g = np.random.default_rng(12).standard_normal(out.shape)
    assert emb.backward(g) is None

    def loss() -> float:
        return float(np.sum(emb(ids) * g))

    numeric = finite_difference_gradient(loss, w)
    numeric[4] = 0  # the padding row never learns
    assert_close(emb.grads["weight"], numeric, 1e-8, "weight")
    assert emb.grads["weight"][2].any()  # id 2 used three times: all three added


def test_one_hot():
    out = rnnfast.one_hot([[1, 0], [2, 2]], 3)
    assert out.dtype == np.float32 and out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out.argmax(-1), [[1, 0], [2, 2]])
    assert out.sum() == 4
    assert rnnfast.one_hot(np.array([0]), 2, dtype=F64).dtype == F64


@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        ([0, 5], ValueError, r"ids must be in \[0, 5\), got 5 at index \(1,\)"),
        ([-1], ValueError, "got -1"),
        ([0.0, 1.0], TypeError, "ids must hold integers"),
        ([True], TypeError, "ids must hold integers"),
    ],
)
def test_bad_token_ids(ids, error, match):
    with pytest.raises(error, match=match):
        rnnfast.Embedding(5, 2)(ids)
    with pytest.raises(error, match=match):
        rnnfast.one_hot(ids, 5)


# --------------------------------------------------------------------------------------------
# Argument checking


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"hidden_size": 0}, ValueError, "hidden_size must be >= 1"),
        ({"input_size": 2.0}, TypeError, "input_size must be an int"),
        ({"num_layers": True}, TypeError, "num_layers must be an int"),
        ({"nonlinearity": "sigmoid"}, ValueError, "nonlinearity must be one of"),
        ({"dropout": 1.5}, ValueError, r"dropout must be in \[0, 1\]"),
        ({"dtype": np.int32}, TypeError, "dtype must be float32 or float64"),
        ({"backend": "gpu"}, ValueError, "backend must be one of"),
    ],
)
def test_constructor_checks(kwargs, error, match):
    args = {"input_size": 3, "hidden_size": 4, "num_layers": 2} | kwargs
    with pytest.raises(error, match=match):
        rnnfast.RNN(**args)


_NOT_BOOLS = [0, 1, "False", "True", None, 1.0]


@pytest.mark.parametrize("value", _NOT_BOOLS)
@pytest.mark.parametrize(
    ("make", "flag"),
    [
        (lambda **kw: rnnfast.RNN(3, 4, **kw), "bias"),
        (lambda **kw: rnnfast.RNN(3, 4, **kw), "batch_first"),
        (lambda **kw: rnnfast.RNN(3, 4, **kw), "bidirectional"),
        (lambda **kw: rnnfast.RNNCell(3, 4, **kw), "bias"),
        (lambda **kw: rnnfast.Linear(3, 4, **kw), "bias"),
    ],
    ids=["RNN.bias", "RNN.batch_first", "RNN.bidirectional", "RNNCell.bias", "Linear.bias"],
)
def test_flags_must_be_bools(make, flag, value):
    """PyTorch raises TypeError for bias=0 and batch_first="False"; bool() made
    batch_first="False" mean True."""
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        make(**{flag: value})


@pytest.mark.parametrize("value", [False, np.False_])
def test_flags_take_python_and_numpy_bools(value):
    rnn = rnnfast.RNN(3, 4, bias=value, batch_first=value, bidirectional=value)
    assert (rnn.bias, rnn.batch_first, rnn.bidirectional) == (False, False, False)
    assert type(rnn.batch_first) is bool
    assert rnnfast.RNNCell(3, 4, bias=value).bias is False
    assert rnnfast.Linear(3, 4, bias=value).bias is False


def test_module_mode_and_strict_must_be_bools():
    rnn = rnnfast.RNN(3, 4, seed=0)
    for value in (0, "False"):
        with pytest.raises(TypeError, match="mode must be True or False"):
            rnn.train(value)
        with pytest.raises(TypeError, match="strict must be True or False"):
            rnn.load_state_dict({}, strict=value)
    assert rnn.train(np.False_).training is False


def test_cell_hidden_size_zero_is_refused():
    """PyTorch's RNNCell returns (B, 0) for hidden_size 0 while its RNN refuses it; rnnfast
    refuses both, on purpose (docs/guide/layers.md, "What differs from PyTorch")."""
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        rnnfast.RNNCell(10, 0)
    with pytest.raises(ValueError, match="hidden_size must be >= 1"):
        rnnfast.RNN(10, 0)


def test_forward_and_backward_check_their_arguments():
    rnn = make_rnn(D=3, H=4, L=2)  # float64
    x = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match=r"x must have shape \(seq, batch, input_size\)"):
        rnn(np.zeros(3))
    with pytest.raises(ValueError, match="input_size=3, got"):
        rnn(np.zeros((5, 2, 4)))
    with pytest.raises(ValueError, match="at least one time step"):
        rnn(np.zeros((0, 2, 3)))
    with pytest.raises(TypeError, match=r"x has dtype float32 but the layer has dtype float64"):
        rnn(x.astype(np.float32))
    with pytest.raises(TypeError, match="x must be a float array"):
        rnn(x.astype(int))
    with pytest.raises(ValueError, match=r"h0 must have shape .* = \(2, 2, 4\), got \(2, 4\)"):
        rnn(x, np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"lengths\[1\] = 0"):
        rnn(x, None, [5, 0])
    with pytest.raises(ValueError, match=r"lengths must be in \[1, T\] = \[1, 5\].*= 6"):
        rnn(x, None, [6, 1])
    with pytest.raises(ValueError, match=r"lengths must have shape \(batch,\) = \(2,\)"):
        rnn(x, None, [5, 5, 5])
    with pytest.raises(TypeError, match="lengths must hold integers"):
        rnn(x, None, [5.0, 2.0])

    fresh = make_rnn()
    with pytest.raises(RuntimeError, match="forward"):
        fresh.backward(np.zeros((5, 2, 4)))
    out, h_n = rnn(x)
    with pytest.raises(ValueError, match=r"d_output must have shape .* = \(5, 2, 4\)"):
        rnn.backward(np.zeros((5, 2, 8)))
    with pytest.raises(ValueError, match=r"d_h_n must have shape .* = \(2, 2, 4\)"):
        rnn.backward(out, np.zeros((2, 4)))
    rnn.backward(out.tolist(), h_n)  # lists are converted
