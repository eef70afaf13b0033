"""The models' fused training step (models/_train.py) and the flat parameter buffers: the same
numbers as the plain path (model.forward/backward, the loss, clipping, the optimizer) and as
the same loop in PyTorch."""

from __future__ import annotations

import numpy as np
import pytest

import rnnfast
from rnnfast.nn import Linear
from rnnfast.nn.module import find_store, flat_parameters
from rnnfast.train import batchify

TEXT = "the quick brown fox jumps over the lazy dog. " * 12


def plain_fit(model, text, steps, bptt, batch_size, opt, max_grad_norm=5.0):
    """CharRNN.fit written with the public pieces, the way it was: truncated_bptt."""
    ids = model.encode(text)
    model.train()
    return rnnfast.truncated_bptt(
        model,
        batchify(ids[:-1], batch_size),
        batchify(ids[1:], batch_size),
        rnnfast.softmax_cross_entropy,
        opt,
        bptt=bptt,
        steps=steps,
        max_grad_norm=max_grad_norm,
    ).losses


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("options", [{}, {"embedding_dim": 5}, {"num_layers": 2}])
@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adagrad"])
def test_fit_equals_the_plain_loop(cell, options, optimizer):
    """30 steps (more than one epoch: the last window is shorter), float64, clipping on."""
    vocab = sorted(set(TEXT))
    a = rnnfast.CharRNN(vocab, 12, cell=cell, dtype=np.float64, seed=1, **options)
    b = rnnfast.CharRNN(vocab, 12, cell=cell, dtype=np.float64, seed=1, **options)
    cls, lr = rnnfast.models.OPTIMIZERS[optimizer]
    losses = a.fit(TEXT, steps=30, bptt=7, batch_size=5, optimizer=optimizer, max_grad_norm=0.5)
    # one layer: its projection gathered from the ids (functional.gathered_forward)
    assert a._fused_step.gathered == ("num_layers" not in options)
    # b's optimizer over copies of the grads mapping with one array swapped: the per-parameter
    # path, the per-array clipping and the generic loop.
    expected = plain_fit(b, TEXT, 30, 7, 5, cls(b.parameters(), b.grads, lr=lr), 0.5)
    np.testing.assert_allclose(losses, expected, rtol=1e-12, atol=0)
    for k, v in b.state_dict().items():
        np.testing.assert_allclose(a.state_dict()[k], v, rtol=1e-9, atol=1e-11, err_msg=k)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("options", [{}, {"embedding_dim": 5}])
def test_the_gathered_layer_equals_the_fused_step_without_it(cell, options):
    """The one-layer step reading the ids (gathered projection, scatter-added dw_ih) against the
    same fused step running the layer on the encoded input: the same losses and weights."""
    vocab = sorted(set(TEXT))
    a = rnnfast.CharRNN(vocab, 12, cell=cell, dtype=np.float64, seed=5, **options)
    b = rnnfast.CharRNN(vocab, 12, cell=cell, dtype=np.float64, seed=5, **options)
    b.fit(TEXT, steps=0)  # makes its step, then without the gathered layer
    b._fused_step.gathered = False
    la = a.fit(TEXT, steps=20, bptt=7, batch_size=5, max_grad_norm=0.5)
    lb = b.fit(TEXT, steps=20, bptt=7, batch_size=5, max_grad_norm=0.5)
    np.testing.assert_allclose(la, lb, rtol=1e-12, atol=0)
    for k, v in b.state_dict().items():
        np.testing.assert_allclose(a.state_dict()[k], v, rtol=1e-10, atol=1e-12, err_msg=k)


def test_fit_float32_and_callbacks_equal_the_plain_loop():
    vocab = sorted(set(TEXT))
    a = rnnfast.CharRNN(vocab, 16, cell="lstm", seed=2)
    b = rnnfast.CharRNN(vocab, 16, cell="lstm", seed=2)
    reports = []
    losses = a.fit(TEXT, steps=8, bptt=9, batch_size=4, callback=reports.append)
    expected = plain_fit(b, TEXT, 8, 9, 4, rnnfast.Adam(b.parameters(), b.grads, lr=2e-3))
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    assert [r.step for r in reports] == list(range(1, 9))
    assert reports[-1].tokens == 8 * 9 * 4
    stop = a.fit(TEXT, steps=8, bptt=9, batch_size=4, callback=lambda p: p.step == 3)
    assert len(stop) == 3


def test_models_keep_parameters_and_grads_in_one_flat_buffer():
    model = rnnfast.CharRNN(sorted(set(TEXT)), 10, cell="gru", embedding_dim=4, seed=0)
    params, grads = model.parameters(), model.grads
    store = find_store(params, grads)
    assert store is not None and len(store.views) == len(params) == 7
    for name, p in params.items():
        assert np.shares_memory(p, store.params) and np.shares_memory(grads[name], store.grads)
        assert p.ctypes.data % 64 == 0
    # a subset, or a grad that is not the model's: the per-parameter path
    assert find_store({k: params[k] for k in list(params)[:3]}, grads) is None
    assert find_store(params, {**grads, "decoder.bias": grads["decoder.bias"].copy()}) is None


@pytest.mark.parametrize(
    "cls, kw",
    [
        (rnnfast.Adam, {"lr": 0.1}),
        (rnnfast.Adam, {"lr": 0.1, "weight_decay": 0.1}),
        (rnnfast.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (rnnfast.Adagrad, {"lr": 0.1, "initial_accumulator_value": 0.5}),
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_flat_update_is_the_per_parameter_update_bit_for_bit(cls, kw, dtype):
    shapes = [(7, 3), (7,), (2, 5), (2,)]
    with flat_parameters(shapes, dtype) as store:
        flat = [Linear(3, 7, dtype=dtype, seed=0), Linear(5, 2, dtype=dtype, seed=1)]
    plain = [Linear(3, 7, dtype=dtype, seed=0), Linear(5, 2, dtype=dtype, seed=1)]

    def mapping(layers, which):
        return (
            {f"{i}.{k}": v for i, ly in enumerate(layers) for k, v in getattr(ly, which)().items()}
            if which == "parameters"
            else {f"{i}.{k}": v for i, ly in enumerate(layers) for k, v in ly.grads.items()}
        )

    opt_flat = cls(mapping(flat, "parameters"), mapping(flat, "grads"), **kw)
    opt_plain = cls(mapping(plain, "parameters"), mapping(plain, "grads"), **kw)
    assert opt_flat._store is store and opt_plain._store is None
    rng = np.random.default_rng(0)
    for step in range(6):
        for name, g in opt_flat.grads.items():
            g[...] = rng.standard_normal(g.shape)
            opt_plain.grads[name][...] = g
        if step == 3:  # a per-parameter step in between (a grad array swapped in)
            swapped = dict(opt_flat.grads)
            swapped["0.bias"] = swapped["0.bias"].copy()
            opt_flat.grads = swapped
        if step == 4:  # the state replaced from outside (a checkpoint loaded), on both
            for opt in (opt_flat, opt_plain):
                opt.state = {
                    n: {k: 0.5 * v for k, v in st.items()} for n, st in opt_plain.state.items()
                }
        opt_flat.step()
        opt_flat.grads = mapping(flat, "grads")
        opt_plain.step()
        for name, p in opt_plain.params.items():
            np.testing.assert_array_equal(opt_flat.params[name], p, err_msg=f"{step} {name}")
            for key, value in opt_plain.state[name].items():
                np.testing.assert_array_equal(opt_flat.state[name][key], value)
    # the padding between parameters stayed zero
    used = np.zeros(store.size, bool)
    for _, _, where in store.views.values():
        used[where] = True
    assert not store.params[: store.size][~used].any()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fit_equals_the_same_loop_in_torch(cell):
    """The benchmark's PyTorch loop (rnnfast._bench_train.torch_loop: one-hot, nn.RNN/LSTM/GRU,
    nn.Linear, cross_entropy, Adam, clip_grad_norm_, detached state) from the same weights, in
    float64: the same losses over more than one epoch."""
    pytest.importorskip("torch")
    from rnnfast._bench_train import torch_loop

    model = rnnfast.CharRNN(sorted(set(TEXT)), 16, cell=cell, dtype=np.float64, seed=3)
    theirs = torch_loop(model, TEXT, bptt=20, batch_size=6, lr=1e-2, max_grad_norm=0.5)(12)
    ours = model.fit(TEXT, steps=12, bptt=20, batch_size=6, lr=1e-2, max_grad_norm=0.5)
    assert model._fused_step.gathered
    np.testing.assert_allclose(ours, theirs, rtol=1e-10)


def test_a_pickled_model_trains_the_same_without_its_flat_buffers():
    """cloudpickle (Dask ships models so): the copy's parameters are arrays of their
    own, its store empty (not a second copy of the weights), and it trains as the original."""
    cloudpickle = pytest.importorskip("cloudpickle")
    vocab = sorted(set(TEXT))
    model = rnnfast.CharRNN(vocab, 12, cell="gru", dtype=np.float64, seed=4)
    model.fit(TEXT, steps=3, bptt=7, batch_size=5)
    assert len(cloudpickle.dumps(model._flat)) < 200  # not a second copy of the weights
    copy = cloudpickle.loads(cloudpickle.dumps(model))
    assert copy._fused_step._buffers == {}
    assert find_store(copy.parameters(), copy.grads) is None
    a = model.fit(TEXT, steps=4, bptt=7, batch_size=5)
    b = copy.fit(TEXT, steps=4, bptt=7, batch_size=5)
    np.testing.assert_allclose(a, b, rtol=1e-12)
