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
