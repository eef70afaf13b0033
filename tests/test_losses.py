"""Losses: values, gradients (finite differences in float64), stability, argument checks, and
PyTorch parity where torch is installed."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close, finite_difference_gradient

from rnnfast import mse, softmax_cross_entropy


def check_gradient(loss_and_grad, pred: np.ndarray) -> None:
    """grad of ``loss_and_grad(pred) -> (loss, grad)`` matches central differences."""
    _, grad = loss_and_grad(pred)
    numeric = finite_difference_gradient(lambda: float(loss_and_grad(pred)[0]), pred)
    assert np.abs(numeric).max() > 1e-3
    assert_close(grad, numeric, 1e-7, "grad")


def test_cross_entropy_value_is_minus_log_softmax_of_the_target():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = np.array([2, 0])
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_softmax[[0, 1], [2, 0]]
    loss, grad = softmax_cross_entropy(logits, targets, reduction="none")
    assert_close(loss, expected, 1e-15, "loss")
    assert_close(grad[1], [1 / 3 - 1, 1 / 3, 1 / 3], 1e-15, "grad")
    mean, _ = softmax_cross_entropy(logits, targets)
    assert isinstance(mean, float)
    assert mean == pytest.approx(expected.mean(), rel=1e-15)
    assert softmax_cross_entropy(logits, targets, "sum")[0] == pytest.approx(expected.sum())
    assert softmax_cross_entropy(np.zeros((4, 7)), [0, 1, 2, 3])[0] == pytest.approx(np.log(7))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("ignore_index", [None, -100, 1])
def test_cross_entropy_gradient_matches_finite_differences(reduction, ignore_index):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 2, 5))  # (T, B, C), like a language model's
    targets = rng.integers(0, 5, (3, 2))
    targets[0, 0] = 1
    if ignore_index == -100:
        targets[1] = -100
    check_gradient(
        lambda z: softmax_cross_entropy(z, targets, reduction, ignore_index=ignore_index), logits
    )


def test_cross_entropy_ignore_index_drops_targets_from_loss_mean_and_gradient():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((6, 4))
    targets = np.array([0, 3, -1, 2, -1, 1])
    loss, grad = softmax_cross_entropy(logits, targets, ignore_index=-1)
    keep = targets != -1
    loss_kept, grad_kept = softmax_cross_entropy(logits[keep], targets[keep])
    assert loss == pytest.approx(loss_kept, rel=1e-14)
    assert_close(grad[keep], grad_kept, 1e-15, "kept rows")
    assert not grad[~keep].any()
    assert softmax_cross_entropy(logits, np.full(6, -1), ignore_index=-1) == (0.0, pytest.approx(0))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_ignored_nan_logits_stay_out(reduction):
    """An ignored element's NaN logits reach neither the loss nor the gradient (the mask was a
    product, and NaN * 0 is NaN); the loss equals PyTorch's."""
    logits = np.array([[1.0, 2.0], [np.nan, 0.0]])
    loss, grad = softmax_cross_entropy(logits, np.array([0, -100]), reduction, ignore_index=-100)
    expected, _ = softmax_cross_entropy(logits[:1], np.array([0]), reduction)
    assert_close(np.ravel(loss)[:1], np.ravel(expected), 1e-15, "loss")
    assert np.isfinite(loss).all()
    assert np.isfinite(grad).all() and not grad[1].any()
    if reduction == "mean":
        assert loss == pytest.approx(1.3132616875182228, rel=1e-15)  # torch's cross_entropy


def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [5e3, 5e3 + 1, 5e3 - 1]], dtype=dtype)
    loss, grad = softmax_cross_entropy(logits, [2, 1], reduction="none")
    assert grad.dtype == dtype and np.isfinite(grad).all() and np.isfinite(loss).all()
    assert loss[0] == pytest.approx(2e4, rel=1e-6)
    shifted, _ = softmax_cross_entropy(np.array([[0.0, 1.0, -1.0]]), [1], reduction="none")
    assert loss[1] == pytest.approx(shifted[0], rel=1e-6)


def test_mse_value_and_gradient():
    rng = np.random.default_rng(2)
    pred = rng.standard_normal((4, 3, 2))
    target = rng.standard_normal((4, 3, 2))
    loss, grad = mse(pred, target)
    assert loss == pytest.approx(np.mean((pred - target) ** 2), rel=1e-14)
    assert mse(pred, target, "sum")[0] == pytest.approx(np.sum((pred - target) ** 2), rel=1e-14)
    assert_close(mse(pred, target, "none")[0], (pred - target) ** 2, 1e-15)
    assert_close(grad, 2 * (pred - target) / pred.size, 1e-15)
    check_gradient(lambda p: mse(p, target), pred)
    check_gradient(lambda p: mse(p, target, "sum"), pred)
    assert mse(pred.astype(np.float32), target)[1].dtype == np.float32


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0, 3]), ValueError, r"\[0, 3\).*got 3"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [-1, 0]), ValueError, "got -1"),
        (
            lambda: softmax_cross_entropy(np.zeros((2, 3)), [-1, 5], ignore_index=-1),
            ValueError,
            "or ignore_index=-1, got 5",
        ),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0.0, 1.0]), TypeError, "integers"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0, 1, 2]), ValueError, r"\(2,\)"),
        (lambda: softmax_cross_entropy(np.zeros((2, 3)), [0, 1], "avg"), ValueError, "reduction"),
        (lambda: softmax_cross_entropy(np.array(["a"]), [0]), TypeError, "logits"),
        (lambda: mse(np.zeros(3), np.zeros((3, 1))), ValueError, "target must have the shape"),
    ],
)
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 3, 7))
    targets = rng.integers(0, 7, (5, 3))
    targets[2] = 4
    for reduction in ("mean", "sum", "none"):
        z = torch.tensor(logits, requires_grad=True)
        ref = torch.nn.functional.cross_entropy(
            z.reshape(-1, 7),
            torch.from_numpy(targets).reshape(-1),
            reduction=reduction,
            ignore_index=4,
        )
        ref.backward(torch.ones_like(ref))
        loss, grad = softmax_cross_entropy(logits, targets, reduction, ignore_index=4)
        assert_close(np.reshape(loss, -1), ref.detach().numpy().reshape(-1), 1e-14, reduction)
        assert_close(grad, z.grad.numpy(), 1e-14, f"grad {reduction}")

    target = rng.standard_normal((5, 3))
    p = torch.tensor(logits[..., 0], requires_grad=True)
    ref = torch.nn.functional.mse_loss(p, torch.from_numpy(target))
    ref.backward()
    loss, grad = mse(logits[..., 0], target)
    assert loss == pytest.approx(ref.item(), rel=1e-14)
    assert_close(grad, p.grad.numpy(), 1e-14, "mse grad")


# ---- functional.linear_cross_entropy: a decoder and its loss in one call ----------------------

from rnnfast import functional  # noqa: E402
from rnnfast._backend import kernels as K  # noqa: E402

BACKENDS = ["numpy"] + (["cython"] if K is not None else [])


def decoder_expected(x, weight, bias, targets):
    """softmax_cross_entropy of the Linear decoder's logits, and the backward by hand."""
    logits = x @ weight.T + (0 if bias is None else bias)
    loss, g = softmax_cross_entropy(logits, targets)
    return loss, g.T, g @ weight, g.T @ x, None if bias is None else g.sum(0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(
    "N, H, V", [(1, 1, 1), (7, 5, 3), (37, 12, 15), (1600, 128, 61), (3000, 33, 17), (900, 8, 200)]
)
def test_linear_cross_entropy_is_the_decoder_and_its_loss(backend, dtype, bias, N, H, V):
    """Sizes with partial vectors of columns, one and several column chunks, one and two row
    blocks of dweight."""
    rng = np.random.default_rng(N + V)
    x = rng.standard_normal((N, H)).astype(dtype)
    w = (rng.standard_normal((V, H)) * 0.5).astype(dtype)
    b = rng.standard_normal(V).astype(dtype) if bias else None
    t = rng.integers(0, V, N)
    got = functional.linear_cross_entropy(x, w, b, t, backend=backend)
    want = decoder_expected(*(a if a is None else a.astype(np.float64) for a in (x, w, b)), t)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert isinstance(got.loss, float)
    assert_close(got.loss, want[0], tol, "loss")
    for name, a, e in zip(("d_logits_t", "dx", "dweight", "dbias"), got[1:], want[1:], strict=True):
        if e is None:
            assert a is None
            continue
        assert a.dtype == dtype and a.shape == e.shape, name
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol * np.abs(e).max(), err_msg=name)


@pytest.mark.skipif(K is None, reason="compiled kernels not built")
def test_linear_cross_entropy_bits_do_not_depend_on_the_helper_thread():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((3000, 64)), rng.standard_normal((61, 64))
    b, t = rng.standard_normal(61), rng.integers(0, 61, 3000)
    results = []
    for overlap in ("off", "on", "on", "off"):
        with K.tuned(overlap=overlap, overlap_min_macs=0):
            results.append(functional.linear_cross_entropy(x, w, b, t, backend="cython"))
    for r in results[1:]:
        assert r.loss == results[0].loss
        for a, e in zip(r[1:], results[0][1:], strict=True):
            np.testing.assert_array_equal(a, e)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_cross_entropy_writes_into_out(backend):
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((40, 6)), rng.standard_normal((9, 6)), rng.standard_normal(9)
    t = rng.integers(0, 9, 40)
    out = (np.full((9, 40), np.nan), np.full((40, 6), np.nan), np.full((9, 6), np.nan),
           np.full(9, np.nan))  # fmt: skip
    got = functional.linear_cross_entropy(x, w, b, t, out=out, backend=backend)
    want = functional.linear_cross_entropy(x, w, b, t, backend=backend)
    for a, o, e in zip(got[1:], out, want[1:], strict=True):
        assert a is o
        np.testing.assert_array_equal(a, e)
    assert got.loss == want.loss


def test_linear_cross_entropy_rejects_bad_arguments():
    x, w, b, t = np.zeros((4, 3)), np.zeros((5, 3)), np.zeros(5), np.array([0, 1, 2, 4])
    f = functional.linear_cross_entropy
    good = (np.zeros((5, 4)), np.zeros((4, 3)), np.zeros((5, 3)), np.zeros(5))
    with pytest.raises(ValueError, match="targets must be in"):
        f(x, w, b, [0, 1, 2, 5])
    with pytest.raises(ValueError, match="targets"):
        f(x, w, b, [0, 1])
    with pytest.raises(TypeError, match="targets must hold integers"):
        f(x, w, b, np.zeros(4))
    with pytest.raises(ValueError, match="weight"):
        f(x, np.zeros((5, 2)), b, t)
    with pytest.raises(ValueError, match="bias"):
        f(x, w, np.zeros(4), t)
    with pytest.raises(TypeError, match="weight has dtype float32"):
        f(x, w.astype(np.float32), b, t)
    with pytest.raises(ValueError, match="N >= 1"):
        f(np.zeros((0, 3)), w, b, np.zeros(0, int))
    with pytest.raises(TypeError, match="out must be"):
        f(x, w, b, t, out=good[:3])
    with pytest.raises(TypeError, match="dx must be a NumPy array of dtype float64"):
        f(x, w, b, t, out=(good[0], good[1].astype(np.float32), good[2], good[3]))
    with pytest.raises(ValueError, match="dweight"):
        f(x, w, b, t, out=(good[0], good[1], np.zeros((5, 4)), good[3]))
    with pytest.raises(ValueError, match="C-contiguous"):
        f(x, w, b, t, out=(np.zeros((4, 5)).T, *good[1:]))
    with pytest.raises(ValueError, match="dbias must be None exactly"):
        f(x, w, None, t, out=good)
    room = np.zeros(25)
    with pytest.raises(ValueError, match="overlap"):
        f(x, w, b, t, out=(room[:20].reshape(5, 4), good[1], good[2], room[15:20]))
    with pytest.raises(ValueError, match="overlap"):
        f(good[1], w, b, t, out=good)
