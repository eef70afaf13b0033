"""Optimizers against their textbook updates worked out by hand (and torch.optim where
installed); gradient clipping; argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close

import rnnfast
from rnnfast import SGD, Adagrad, Adam, clip_grad_norm, clip_grad_value


def run(opt_cls, p0: float, grads: list[float], **kw) -> list[float]:
    """Parameter values after each step of ``opt_cls`` on one scalar parameter."""
    p = {"w": np.array([p0])}
    g = {"w": np.zeros(1)}
    opt = opt_cls(p, g, **kw)
    values = []
    for gi in grads:
        g["w"][0] = gi
        opt.step()
        values.append(float(p["w"][0]))
    return values


@pytest.mark.parametrize(
    ("opt_cls", "kw", "p0", "grads", "expected"),
    [
        # p -= lr * g
        (SGD, {"lr": 0.1}, 1.0, [0.5, -1.0], [0.95, 1.05]),
        # buf = g, then 0.9 * buf + g:  1 - 0.1 * 1 = 0.9;  0.9 - 0.1 * 1.9 = 0.71
        (SGD, {"lr": 0.1, "momentum": 0.9}, 1.0, [1.0, 1.0], [0.9, 0.71]),
        # dampening 0.5: buf = 1, then 0.9 + 0.5 = 1.4:  0.9;  0.9 - 0.14 = 0.76
        (SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, 1.0, [1.0, 1.0], [0.9, 0.76]),
        # nesterov: g + 0.9 * buf = 1.9, then 1 + 0.9 * 1.9 = 2.71:  0.81;  0.81 - 0.271
        (SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, 1.0, [1.0, 1.0], [0.81, 0.539]),
        # weight decay: g + 0.1 * p = 1.2;  2 - 0.5 * 1.2 = 1.4
        (SGD, {"lr": 0.5, "weight_decay": 0.1}, 2.0, [1.0], [1.4]),
        # sum = 4: 1 - 0.1 * 2 / (2 + eps);  sum = 8: then - 0.1 * 2 / (sqrt(8) + eps)
        (Adagrad, {"lr": 0.1}, 1.0, [2.0, 2.0], [0.900000000005, 0.8292893218888453]),
        # lr_decay: the second step's lr is 0.1 / (1 + 0.5)
        (
            Adagrad,
            {"lr": 0.1, "lr_decay": 0.5},
            1.0,
            [2.0, 2.0],
            [0.900000000005, 0.8528595479275636],
        ),
        # sum starts at 1: 1 - 0.1 * 2 / (sqrt(5) + eps)
        (Adagrad, {"lr": 0.1, "initial_accumulator_value": 1.0}, 1.0, [2.0], [0.9105572809040084]),
        # step 1: m = 0.2, v = 0.004, m^ = 2, v^ = 4: 1 - 0.1 * 2 / (2 + 1e-8)
        # step 2: m = 0.08, v = 0.004996, m^ = 0.08 / 0.19, v^ = 0.004996 / 0.001999
        (Adam, {"lr": 0.1}, 1.0, [2.0, -1.0], [0.9000000005, 0.8733662967024315]),
    ],
)
def test_textbook_update(opt_cls, kw, p0, grads, expected):
    assert run(opt_cls, p0, grads, **kw) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("SGD", {"lr": 0.1, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.01}),
        ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "eps": 1e-6}),
        ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "weight_decay": 0.1}),
    ],
)
def test_matches_torch_optim(name, kw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    shapes = {"w": (3, 4), "b": (4,)}
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = {k: np.zeros(s) for k, s in shapes.items()}
    tparams = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    opt = getattr(rnnfast, name)(params, grads, **kw)
    topt = getattr(torch.optim, name)(list(tparams.values()), **kw)
    for _ in range(5):
        for k, s in shapes.items():
            grads[k][...] = rng.standard_normal(s)
            tparams[k].grad = torch.from_numpy(grads[k].copy())
        opt.step()
        topt.step()
    for k in shapes:
        assert_close(params[k], tparams[k].detach().numpy(), 1e-14, k)


def test_optimizer_trains_a_module_through_its_live_dicts(dtype):
    rng = np.random.default_rng(1)
    lin = rnnfast.Linear(3, 2, dtype=dtype, seed=0)
    x = rng.standard_normal((8, 3)).astype(dtype)
    y = rng.standard_normal((8, 2)).astype(dtype)
    opt = Adam(lin.parameters(), lin.grads, lr=0.05)
    losses = []
    for _ in range(50):
        opt.zero_grad()
        loss, d = rnnfast.mse(lin(x), y)
        lin.backward(d)
        opt.step()
        losses.append(loss)
    assert losses[-1] < 0.8 * losses[0]
    assert opt.steps == 50
    assert lin.parameters()["weight"].dtype == dtype
    opt.zero_grad()
    assert not any(g.any() for g in lin.grads.values())


def test_clip_grad_norm_returns_the_norm_before_clipping():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([[4.0]])}
    assert clip_grad_norm(grads, 10.0) == 5.0
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])  # within the limit: untouched
    assert clip_grad_norm(grads, 1.0) == 5.0
    assert_close(grads["a"], [3 / (5 + 1e-6), 0], 1e-15, "a")
    assert_close(grads["b"], [[4 / (5 + 1e-6)]], 1e-15, "b")
    assert clip_grad_norm(grads, 1.0) == pytest.approx(1.0, abs=1e-6)

    listed = [np.array([3.0, -4.0]), np.array([1.0])]
    assert clip_grad_norm(listed, 100.0, norm_type=math.inf) == 4.0
    assert clip_grad_norm(listed, 100.0, norm_type=1) == 8.0
    with pytest.warns(UserWarning, match="no gradients"):
        assert clip_grad_norm([], 1.0) == 0.0
    with pytest.warns(UserWarning, match="no gradients"):
        assert clip_grad_norm(iter([]), 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    grads = [np.array([1.0, np.nan])]
    with pytest.raises(RuntimeError, match="nan"):
        clip_grad_norm(grads, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(grads[0], [1.0, np.nan])
    assert math.isnan(clip_grad_norm(grads, 1.0))
    assert np.isnan(grads[0]).all()  # as PyTorch


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, "inf"])
@pytest.mark.parametrize("where", [0, 1])
def test_clip_grad_norm_nan_in_any_array(norm_type, where):
    """A NaN makes the norm and every gradient NaN, whichever array holds it (Python's max()
    over per-array maxima kept the first array's value when a later one was NaN)."""
    grads = [np.ones(1), np.full(10, np.nan)][:: 1 if where else -1]
    with pytest.raises(RuntimeError, match="nan"):
        clip_grad_norm(grads, 0.5, norm_type=norm_type, error_if_nonfinite=True)
    assert math.isnan(clip_grad_norm(grads, 0.5, norm_type=norm_type))
    assert all(np.isnan(g).all() for g in grads)  # as PyTorch


def test_clip_grad_norm_options():
    grads = [np.array([3.0, -4.0])]
    assert clip_grad_norm(grads, 100.0, norm_type="inf") == 4.0  # the string, as PyTorch
    assert clip_grad_norm(grads, 100.0, norm_type="1") == 7.0
    with pytest.raises(ValueError, match="norm_type must be a number or 'inf'"):
        clip_grad_norm(grads, 1.0, norm_type="euclid")
    # Refused on purpose (PyTorch computes a p < 0 "norm"): documented in the docstring.
    with pytest.raises(ValueError, match="norm_type must be >= 0"):
        clip_grad_norm(grads, 1.0, norm_type=-1)
    with pytest.raises(ValueError, match="norm_type must be > 0"):
        clip_grad_norm(grads, 1.0, norm_type=0)
    with pytest.raises(TypeError, match="norm_type must be a number"):
        clip_grad_norm(grads, 1.0, norm_type=True)
    for flag in (1, "False", None):
        with pytest.raises(TypeError, match="error_if_nonfinite must be True or False"):
            clip_grad_norm(grads, 1.0, error_if_nonfinite=flag)
    assert clip_grad_norm(grads, 100.0, error_if_nonfinite=np.True_) == 5.0


def test_sgd_nesterov_must_be_a_bool():
    p, g = {"w": np.zeros(3)}, {"w": np.zeros(3)}
    for flag in (1, "False"):
        with pytest.raises(TypeError, match="nesterov must be True or False"):
            SGD(p, g, lr=0.1, momentum=0.9, nesterov=flag)
    assert SGD(p, g, lr=0.1, momentum=0.9, nesterov=np.True_).nesterov is True


def test_adagrad_docstring_says_whose_update_it_is():
    assert "sqrt(sum) + eps" in Adagrad.__doc__
    assert "not the one of the classic" in Adagrad.__doc__


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(norm_type):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    tparams = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for p, g in zip(tparams, grads, strict=True):
        p.grad = torch.from_numpy(g.copy())
    expected = torch.nn.utils.clip_grad_norm_(tparams, 0.5, norm_type=norm_type)
    assert clip_grad_norm(grads, 0.5, norm_type=norm_type) == pytest.approx(expected.item())
    for p, g in zip(tparams, grads, strict=True):
        assert_close(g, p.grad.numpy(), 1e-14)


def test_clip_grad_value():
    grads = {"a": np.array([-3.0, 0.5, 2.0]), "b": np.array([[-0.2]], dtype=np.float32)}
    clip_grad_value(grads, 1.0)
    np.testing.assert_array_equal(grads["a"], [-1.0, 0.5, 1.0])
    np.testing.assert_array_equal(grads["b"], np.float32([[-0.2]]))
    assert grads["b"].dtype == np.float32


def test_optimizer_argument_checks():
    p = {"w": np.zeros(3)}
    with pytest.raises(
        ValueError, match=r"same keys: only in params \['w'\], only in grads \['v'\]"
    ):
        SGD(p, {"v": np.zeros(3)}, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(2,\)"):
        SGD(p, {"w": np.zeros(2)}, lr=0.1)
    with pytest.raises(TypeError, match="mappings"):
        SGD([np.zeros(3)], [np.zeros(3)], lr=0.1)
    with pytest.raises(TypeError, match="float NumPy array"):
        SGD({"w": [0.0]}, {"w": [0.0]}, lr=0.1)
    readonly = np.zeros(3)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD({"w": readonly}, {"w": np.zeros(3)}, lr=0.1)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        Adam(p, {"w": np.zeros(3)}, lr=-1)
    with pytest.raises(ValueError, match=r"betas\[0\] must be >= 0 and < 1"):
        Adam(p, {"w": np.zeros(3)}, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, {"w": np.zeros(3)}, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="empty"):
        SGD({}, {}, lr=0.1)
    grads = {"w": np.zeros(3)}
    opt = SGD(p, grads, lr=0.1)
    grads["w"] = np.zeros(4)  # replaced by something of the wrong shape
    with pytest.raises(ValueError, match=r"grads\['w'\] has shape \(4,\)"):
        opt.step()


# ---- functional.adam_update: Adam over a flat buffer in one pass -----------------------------

from rnnfast import functional  # noqa: E402
from rnnfast._backend import kernels as _kernels  # noqa: E402


@pytest.mark.parametrize("backend", ["numpy"] + (["cython"] if _kernels is not None else []))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_update_is_adams_numpy_update_bit_for_bit(backend, dtype):
    """Several steps over 1,000 values (whole vectors and a tail), against Adam's per-parameter
    update of the same arrays."""
    rng = np.random.default_rng(7)
    n = 1003
    p = rng.standard_normal(n).astype(dtype)
    ref = {"w": p.copy()}
    grads = {"w": np.zeros(n, dtype)}
    opt = rnnfast.Adam(ref, grads, lr=3e-3, betas=(0.8, 0.99), eps=1e-6)
    opt._store = None  # the per-parameter update
    m, v = np.zeros(n, dtype), np.zeros(n, dtype)
    for step in range(1, 6):
        g = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 3, n)).astype(dtype)
        grads["w"][...] = g
        opt.step()
        functional.adam_update(
            p, g, m, v, lr=3e-3, betas=(0.8, 0.99), eps=1e-6, step=step, backend=backend
        )
        np.testing.assert_array_equal(p, ref["w"])
        np.testing.assert_array_equal(m, opt.state["w"]["exp_avg"])
        np.testing.assert_array_equal(v, opt.state["w"]["exp_avg_sq"])


def test_adam_update_rejects_bad_arrays():
    a, b, c, d = (np.zeros(4) for _ in range(4))
    kw = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "step": 1}
    f = functional.adam_update
    with pytest.raises(TypeError, match="grads must be a float32 or float64"):
        f(a, [0.0] * 4, c, d, **kw)
    with pytest.raises(TypeError, match="exp_avg has dtype float32"):
        f(a, b, c.astype(np.float32), d, **kw)
    with pytest.raises(ValueError, match="exp_avg_sq must have shape"):
        f(a, b, c, np.zeros(5), **kw)
    with pytest.raises(ValueError, match="C-contiguous"):
        f(np.zeros(8)[::2], b, c, d, **kw)
    read_only = np.zeros(4)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="params is read-only"):
        f(read_only, b, c, d, **kw)
    with pytest.raises(ValueError, match="must not overlap"):
        f(a, b, a, d, **kw)
    with pytest.raises(ValueError, match="must not overlap"):
        f(a, a, c, d, **kw)
    with pytest.raises(ValueError, match="betas"):
        f(a, b, c, d, **{**kw, "betas": (1.0, 0.9)})
    with pytest.raises(ValueError, match="step"):
        f(a, b, c, d, **{**kw, "step": 0})
