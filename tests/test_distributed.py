"""rnnfast.distributed on a real Dask cluster of this machine (worker processes on 127.0.0.1):
equality with single-process ``fit``, faults (a killed worker, a lost scheduler), checkpoints
and resume, batch inference, the command line.

Marked ``distributed`` (deselect with ``-m "not distributed"``); skipped without Dask. One
two-worker cluster serves the whole module; every test that starts another closes it.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import rnnfast
from rnnfast import CharRNN, SequenceRegressor

distributed = pytest.importorskip("distributed")
rd = pytest.importorskip("rnnfast.distributed")

pytestmark = pytest.mark.distributed

# One BLAS thread per worker: the workers of a test share this machine's cores.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TEXT = rnnfast.datasets.corpus_text()[:3000]
VOCAB = sorted(set(TEXT))
TOL = {np.float64: 1e-12, np.float32: 1e-5}


def local_cluster(n_workers: int = 2) -> distributed.LocalCluster:
    return distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        env=WORKER_ENV,
    )


def children() -> list:
    import psutil  # a dependency of distributed

    # multiprocessing's resource tracker lives as long as this process, by design.
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.is_running() and "resource_tracker" not in " ".join(p.cmdline())
    ]


@pytest.fixture(scope="module")
def client():
    before = {p.pid for p in children()}
    # Not the default client: rnnfast.distributed must use the client it is given.
    with local_cluster() as cluster, distributed.Client(cluster, set_as_default=False) as c:
        yield c
    # No worker, nanny or scheduler process of this module outlives it.
    deadline = time.monotonic() + 30
    while (left := [p for p in children() if p.pid not in before]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [p.cmdline() for p in left]


def relative(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))


def assert_same_model(a, b, tol: float) -> None:
    pa, pb = a.parameters(), b.parameters()
    assert set(pa) == set(pb)
    for key in pa:
        assert relative(pa[key], pb[key]) <= tol, key


def char_pair(cell="rnn", dtype=np.float64, **kwargs):
    return tuple(CharRNN(VOCAB, 12, cell=cell, dtype=dtype, seed=1, **kwargs) for _ in range(2))


# --------------------------------------------------------------------------------------------
# Equality with fit


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_sync_equals_fit_float64(client, cell):
    """7 streams over 2 workers (4 + 3 columns), 3 windows per pass so the 8 steps wrap into a
    new pass (state reset), clipping that bites (0.3), Adam: losses and weights to 1e-12."""
    local, dist = char_pair(cell, num_layers=2)
    kwargs = dict(steps=8, bptt=40, batch_size=7, max_grad_norm=0.3, lr=0.01)
    expected = local.fit(TEXT[:800], **kwargs)
    got = rd.fit_distributed(dist, TEXT[:800], client, **kwargs)
    assert len(got) == len(expected) == 8
    assert relative(got, expected) <= 1e-12
    assert_same_model(dist, local, 1e-12)
    # It trained: the weights moved from the initial ones.
    assert (
        relative(
            dist.parameters()["decoder.weight"],
            char_pair(cell, num_layers=2)[0].parameters()["decoder.weight"],
        )
        > 1e-3
    )


def test_sync_equals_fit_float32_embedding(client):
    local, dist = char_pair("gru", np.float32, embedding_dim=6)
    kwargs = dict(steps=6, bptt=16, batch_size=5, optimizer="sgd", lr=0.5)
    expected = local.fit(TEXT, **kwargs)
    got = rd.fit_distributed(dist, TEXT, client, **kwargs)
    assert relative(got, expected) <= 1e-5
    assert_same_model(dist, local, 1e-5)


def test_regressor_from_a_seeded_loader(client):
    """The workers build their shards by calling the loader: the standardization is the whole
    series', as fit computes it, and so is every loss."""
    loader = functools.partial(rnnfast.datasets.synthetic_series, 700, seed=3)
    local = SequenceRegressor(hidden_size=10, cell="lstm", dtype=np.float64, seed=2)
    dist = SequenceRegressor(hidden_size=10, cell="lstm", dtype=np.float64, seed=2)
    kwargs = dict(steps=7, bptt=25, batch_size=6, optimizer="adagrad")
    expected = local.fit(loader(), **kwargs)
    got = rd.fit_distributed(dist, loader, client, **kwargs)
    np.testing.assert_array_equal(dist.mean, local.mean)
    np.testing.assert_array_equal(dist.std, local.std)
    assert relative(got, expected) <= 1e-12
    assert_same_model(dist, local, 1e-12)


def test_shards_stay_on_the_workers(client, tmp_path):
    """Read from a path by the workers once: the file deleted after the first step changes
    nothing, and each worker holds one shard in its memory during the fit."""
    series = np.stack([np.sin(np.arange(900) * 0.05), np.cos(np.arange(900) * 0.11)], axis=1)
    path = tmp_path / "series.npy"
    np.save(path, series)
    local = SequenceRegressor(2, hidden_size=8, dtype=np.float64, seed=0)
    dist = SequenceRegressor(2, hidden_size=8, dtype=np.float64, seed=0)
    kwargs = dict(steps=6, bptt=30, batch_size=4)
    expected = local.fit(series, **kwargs)
    held = {}

    def on_step(progress):
        if progress.step == 1:
            path.unlink()
            held.update(
                client.run(
                    lambda dask_worker: sorted(
                        str(k) for k in dask_worker.data if "rnnfast-shard" in str(k)
                    )
                )
            )

    got = rd.fit_distributed(dist, path, client, callback=on_step, **kwargs)
    assert not path.exists()
    assert relative(got, expected) <= 1e-12
    assert_same_model(dist, local, 1e-12)
    assert sorted(len(v) for v in held.values()) == [1, 1], held


# --------------------------------------------------------------------------------------------
# Local SGD


def test_local_sgd_one_round_is_the_average_of_shard_fits(client):
    """sync_every=3, 3 steps: each shard trains alone (its columns' own fit), then the weights
    are averaged by shard width (4 and 3 of 7 columns)."""
    n = (len(TEXT[:1500]) - 1) // 7
    shard_models = []
    shard_losses = []
    for c0, c1 in [(0, 4), (4, 7)]:
        m = CharRNN(VOCAB, 12, dtype=np.float64, seed=1)
        shard_losses.append(
            np.array(m.fit(TEXT[c0 * n : c1 * n + 1], steps=3, bptt=30, batch_size=c1 - c0))
        )
        shard_models.append((m, (c1 - c0) / 7))
    dist = CharRNN(VOCAB, 12, dtype=np.float64, seed=1)
    got = rd.fit_distributed(
        dist, TEXT[:1500], client, steps=3, bptt=30, batch_size=7, sync_every=3
    )
    for key, value in dist.parameters().items():
        expected = sum(w * m.parameters()[key] for m, w in shard_models)
        assert relative(value, expected) <= 1e-12, key
    assert relative(got, shard_losses[0] * 4 / 7 + shard_losses[1] * 3 / 7) <= 1e-12


def test_local_sgd_trains_and_differs_from_sync(client):
    a, b = char_pair()
    kwargs = dict(steps=12, bptt=20, batch_size=8, lr=0.01)
    sync = rd.fit_distributed(a, TEXT, client, **kwargs)
    local_sgd = rd.fit_distributed(b, TEXT, client, sync_every=4, **kwargs)
    assert len(local_sgd) == 12
    assert np.mean(local_sgd[-3:]) < local_sgd[0] - 0.3  # it learns
    assert relative(local_sgd[4:], sync[4:]) > 1e-6  # and it is not the synchronous run


# --------------------------------------------------------------------------------------------
# Faults, checkpoints, resume


@pytest.mark.parametrize("weights", ["inline", "task"])
def test_worker_killed_mid_fit(client, monkeypatch, weights):
    """SIGKILL one worker process after step 3: Dask reruns its tasks and rebuilds its shard
    (the nanny starts a new worker); the result is the run without the kill. The weights
    ride inside the step tasks (small models) or in a task of their own (large ones)."""
    if weights == "task":
        monkeypatch.setattr(rd, "_INLINE_WEIGHTS_BYTES", 0)
    local, dist = char_pair("lstm")
    kwargs = dict(steps=10, bptt=30, batch_size=6)
    expected = local.fit(TEXT, **kwargs)
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]

    def on_step(progress):
        if progress.step == 3:
            os.kill(pids[victim], signal.SIGKILL)

    got = rd.fit_distributed(dist, TEXT, client, callback=on_step, **kwargs)
    assert relative(got, expected) <= 1e-12
    assert_same_model(dist, local, 1e-12)
    client.wait_for_workers(2, timeout=60)
    assert pids[victim] not in client.run(os.getpid).values()  # it was killed


def test_checkpoint_and_resume_equal_an_uninterrupted_run(client, tmp_path):
    """Stopped after step 5 (checkpoints at 2, 4 and the stop), resumed from the files into a
    fresh model and a fresh optimizer: the losses and weights of the 9-step run, Adam's
    moments and the truncated-BPTT states included."""
    kwargs = dict(steps=9, bptt=20, batch_size=6, lr=0.01)
    reference, first = char_pair("gru")
    expected = rd.fit_distributed(reference, TEXT, client, **kwargs)
    path = tmp_path / "ckpt.npz"
    part = rd.fit_distributed(
        first,
        TEXT,
        client,
        checkpoint=path,
        checkpoint_every=2,
        callback=lambda p: p.step == 5,
        **kwargs,
    )
    assert len(part) == 5
    assert CharRNN.load(path).cell == "gru"  # a model file
    assert Path(rd.state_path(path)).exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    fresh = CharRNN(VOCAB, 12, cell="gru", dtype=np.float64, seed=99)
    got = rd.fit_distributed(fresh, TEXT, client, resume=path, **kwargs)
    assert len(got) == 9
    assert relative(got, expected) <= 1e-12
    assert_same_model(fresh, reference, 1e-12)


def test_local_sgd_resumes_with_each_shards_optimizer(client, tmp_path):
    """sync_every=2 stopped after round 2 and resumed: each shard's own Adam moments come back
    from the checkpoint, so the run equals the uninterrupted one."""
    kwargs = dict(steps=8, bptt=20, batch_size=6, lr=0.01, sync_every=2)
    reference, first = char_pair("lstm")
    expected = rd.fit_distributed(reference, TEXT, client, **kwargs)
    path = tmp_path / "ckpt.npz"
    part = rd.fit_distributed(
        first, TEXT, client, checkpoint=path, callback=lambda p: p.step == 4, **kwargs
    )
    assert len(part) == 4
    fresh = CharRNN(VOCAB, 12, cell="lstm", dtype=np.float64, seed=5)
    got = rd.fit_distributed(fresh, TEXT, client, resume=path, **kwargs)
    assert relative(got, expected) <= 1e-12
    assert_same_model(fresh, reference, 1e-12)


def test_resume_refuses_a_state_file_of_other_weights(client, tmp_path):
    a, b = char_pair()
    path = tmp_path / "ckpt.npz"
    rd.fit_distributed(a, TEXT, client, steps=2, bptt=20, batch_size=4, checkpoint=path)
    b.save(path)  # the model file replaced, its state file not
    with pytest.raises(ValueError, match="does not belong"):
        rd.fit_distributed(b, TEXT, client, steps=4, bptt=20, batch_size=4, resume=path)


def test_lost_scheduler_names_it_and_the_checkpoint_resumes(client, tmp_path):
    """A scheduler (and its workers) in other processes; killed after step 5 (checkpoints
    at steps 2 and 4): a SchedulerLostError naming the scheduler; resuming on another
    cluster from step 4 gives the uninterrupted run."""
    kwargs = dict(steps=8, bptt=20, batch_size=6, lr=0.01)
    reference, first = char_pair()
    expected = rd.fit_distributed(reference, TEXT, client, **kwargs)
    scheduler_file = tmp_path / "scheduler.json"
    env = {**os.environ, **WORKER_ENV}
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--no-dashboard",
            "--scheduler-file",
            str(scheduler_file),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                "--scheduler-file",
                str(scheduler_file),
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--death-timeout",
                "10",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        path = tmp_path / "ckpt.npz"
        with distributed.Client(
            scheduler_file=str(scheduler_file), timeout=60, set_as_default=False
        ) as remote:
            remote.wait_for_workers(2, timeout=60)
            address = remote.scheduler.address

            def on_step(progress):
                if progress.step == 5:
                    scheduler.kill()
                    scheduler.wait()

            with pytest.raises(rd.SchedulerLostError) as info:
                rd.fit_distributed(
                    first,
                    TEXT,
                    remote,
                    checkpoint=path,
                    checkpoint_every=2,
                    callback=on_step,
                    **kwargs,
                )
        message = str(info.value)
        assert address in message and "resume=" in message and str(path) in message
    finally:
        import psutil

        for proc in (workers, scheduler):
            if proc is None:
                continue
            # The worker command's nannies and workers too: none may outlive the test.
            family = (
                [*psutil.Process(proc.pid).children(recursive=True)] if proc.poll() is None else []
            )
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
            _, alive = psutil.wait_procs(family, timeout=30)
            for p in alive:
                p.kill()
    fresh = CharRNN(VOCAB, 12, dtype=np.float64, seed=7)
    got = rd.fit_distributed(fresh, TEXT, client, resume=path, **kwargs)
    assert relative(got, expected) <= 1e-12
    assert_same_model(fresh, reference, 1e-12)


# --------------------------------------------------------------------------------------------
# Inference


def test_predict_bag_of_variable_length_sequences(client):
    import dask.bag as db

    model = CharRNN(VOCAB, 12, cell="lstm", dtype=np.float64, seed=4)
    texts = [TEXT[i : i + n] for i, n in [(0, 5), (10, 41), (70, 1), (100, 17), (200, 30)]]
    out = rd.predict_distributed(model, db.from_sequence(texts, npartitions=3), client)
    assert len(out) == len(texts)
    for text, logits in zip(texts, out, strict=True):
        expected, _ = model.forward(model.encode(text)[:, None])
        assert logits.shape == (len(text), len(VOCAB))
        assert relative(logits, expected[:, 0]) <= 1e-12

    series = [rnnfast.datasets.synthetic_series(n, seed=n) for n in (30, 7, 55)]
    reg = SequenceRegressor(hidden_size=6, cell="gru", seed=0)
    reg.fit(series[0], steps=2, bptt=10, batch_size=2)
    out = rd.predict_distributed(reg, db.from_sequence(series, npartitions=2), client)
    for s, pred in zip(series, out, strict=True):
        assert relative(pred, reg.predict(s)) <= 1e-5


def test_predict_dask_array(client):
    import dask.array as da

    reg = SequenceRegressor(hidden_size=6, seed=0, dtype=np.float64)
    rows = np.stack([rnnfast.datasets.synthetic_series(40, seed=s) for s in range(7)])
    reg.fit(rows[0], steps=2, bptt=10, batch_size=2)
    out = rd.predict_distributed(reg, da.from_array(rows, chunks=(3, 40)), client)
    assert out.shape == rows.shape
    for row, pred in zip(rows, out, strict=True):
        assert relative(pred, reg.predict(row)) <= 1e-12

    model = CharRNN(VOCAB, 8, seed=0, dtype=np.float64)
    ids = np.stack([model.encode(TEXT[i : i + 20]) for i in range(0, 100, 20)])
    logits = rd.predict_distributed(model, da.from_array(ids, chunks=(2, 20)), client)
    assert logits.shape == (5, 20, len(VOCAB))
    expected, _ = model.forward(ids.T)
    assert relative(logits, expected.swapaxes(0, 1)) <= 1e-12


def test_bad_arguments_are_named(client):
    model = CharRNN(VOCAB, 4, seed=0)
    with pytest.raises(TypeError, match="client"):
        rd.fit_distributed(model, TEXT, "tcp://127.0.0.1:8786", steps=1)
    with pytest.raises(TypeError, match="model"):
        rd.fit_distributed(rnnfast.RNN(2, 2), TEXT, client, steps=1)
    with pytest.raises(ValueError, match="optimizer"):
        rd.fit_distributed(model, TEXT, client, steps=1, optimizer="adamw")
    with pytest.raises(ValueError, match="sync_every"):
        rd.fit_distributed(model, TEXT, client, steps=1, sync_every=0)
    with pytest.raises(ValueError, match="not in the model's vocabulary"):
        rd.fit_distributed(model, TEXT + "\u2603", client, steps=1)
    with pytest.raises(ValueError, match="too short"):
        rd.fit_distributed(model, TEXT[:5], client, steps=1, batch_size=8)


# --------------------------------------------------------------------------------------------
# Without Dask; the command line


def test_without_dask_the_error_names_the_extra():
    code = (
        "import sys; sys.modules['distributed'] = None; sys.modules['dask'] = None\n"
        "import rnnfast.distributed as d\n"
        "try:\n"
        "    d.fit_distributed(None, '', None)\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert 'pip install "rnnfast[distributed]"' in out.stdout


@pytest.mark.parametrize("where", ["scheduler", "workers"])
def test_cli_train_on_the_cluster(client, tmp_path, capsys, where):
    """On this module's cluster (--scheduler) and on a cluster of its own (--workers 2,
    closed by the command)."""
    from rnnfast.cli import main

    before = {p.pid for p in children()}
    code = main(
        [
            "train",
            *(["--scheduler", client.scheduler.address] if where == "scheduler" else []),
            *(["--workers", "2"] if where == "workers" else []),
            "--steps",
            "4",
            "--hidden",
            "8",
            "--batch",
            "4",
            "--bptt",
            "16",
            "--sample-every",
            "0",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "2 Dask workers" in out and "communication" in out
    assert CharRNN.load(tmp_path / "out" / "model.npz").cell == "rnn"
    deadline = time.monotonic() + 30
    while (left := [p for p in children() if p.pid not in before]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, [p.cmdline() for p in left]
