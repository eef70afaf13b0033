"""``rnnfast train``: a character-level RNN on the embedded corpus or a text file."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from rnnfast import datasets
from rnnfast.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    NON_NEGATIVE,
    NON_NEGATIVE_FLOAT,
    POSITIVE,
    POSITIVE_FLOAT,
    Commands,
    Monitor,
    StopOnInterrupt,
    UsageError,
    add_command,
    fraction,
    output_dir,
    progress_bar,
    read_bounded,
    read_input,
    si,
    threads_option,
    write_json,
)
from rnnfast.cli._plots import figure, plot_losses, save_plot
from rnnfast.models import CELLS, OPTIMIZERS, CharRNN
from rnnfast.train import Progress, batchify, softmax_cross_entropy


def add_parser(commands: Commands) -> None:
    """Add the ``rnnfast train`` sub-parser."""
    p = add_command(
        commands,
        "train",
        "train a character-level RNN (default: on the embedded corpus)",
        "Train a CharRNN to predict the next character, with truncated BPTT. Without --data "
        "it reads the corpus shipped with rnnfast. Writes OUT/model.npz, OUT/loss.png (with "
        "matplotlib) and OUT/train.json. Ctrl-C stops after the current step and saves.",
    )
    p.add_argument("--data", metavar="FILE", help="UTF-8 text file (default: embedded corpus)")
    p.add_argument(
        "--hidden", type=POSITIVE, metavar="N", default=128, help="hidden units per layer"
    )
    p.add_argument("--layers", type=POSITIVE, metavar="N", default=1, help="stacked RNN layers")
    p.add_argument(
        "--cell",
        choices=CELLS,
        default="rnn",
        help="recurrent cell: plain Elman RNN (default), LSTM or GRU",
    )
    p.add_argument(
        "--bptt", type=POSITIVE, metavar="N", default=50, help="characters per BPTT window"
    )
    p.add_argument("--batch", type=POSITIVE, metavar="N", default=32, help="parallel streams")
    p.add_argument("--steps", type=POSITIVE, metavar="N", default=2000, help="optimizer steps")
    p.add_argument(
        "--lr",
        type=POSITIVE_FLOAT,
        metavar="LR",
        default=None,
        help="learning rate (default: adam 2e-3, adagrad 0.1, sgd 1.0)",
    )
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="adam", help="optimizer")
    p.add_argument(
        "--clip",
        type=NON_NEGATIVE_FLOAT,
        metavar="NORM",
        default=5.0,
        help="gradient-norm clipping (0: off)",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="N", default=0, help="random seed")
    p.add_argument("--out", metavar="DIR", default="rnnfast-train", help="output directory")
    p.add_argument(
        "--sample-every",
        type=NON_NEGATIVE,
        metavar="N",
        default=500,
        help="print a sample every N steps (0: only at the end)",
    )
    p.add_argument(
        "--val-fraction",
        type=fraction,
        metavar="F",
        default=0.1,
        help="fraction of the text held out to measure generalization (0: none)",
    )
    threads_option(p)
    cluster = p.add_mutually_exclusive_group()
    cluster.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="train data-parallel on the Dask cluster of this scheduler (tcp://HOST:PORT); "
        'needs pip install "rnnfast[distributed]"',
    )
    cluster.add_argument(
        "--workers",
        type=POSITIVE,
        metavar="N",
        help="train data-parallel on a Dask cluster of N worker processes started on this "
        "machine (127.0.0.1)",
    )
    p.set_defaults(run=run)


_CELL_NAMES = {"rnn": "", "lstm": "LSTM, ", "gru": "GRU, "}  # the plain RNN goes unnamed


def _utf8_text(path: str) -> str:
    try:
        return read_bounded(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _heldout_loss(model: CharRNN, ids: np.ndarray) -> float:
    """Next-character cross-entropy of ``model`` on ``ids`` (eval mode, fresh state), read as
    up to 8 parallel streams."""
    streams = max(1, min(8, (len(ids) - 1) // 64))
    x, y = batchify(ids[:-1], streams), batchify(ids[1:], streams)
    was_training = model.training
    model.eval()
    try:
        logits, _ = model.forward(x)
    finally:
        model.train(was_training)  # called from fit's callback: training goes on after it
    return float(softmax_cross_entropy(logits, y)[0])


def _plot_training(
    path: Path,
    losses: Sequence[float],
    smoothed: Sequence[float],
    val: Sequence[tuple[int, float]],
    uniform: float,
) -> None:
    fig = figure(figsize=(7, 4.2))
    ax = fig.subplots()
    plot_losses(ax, losses, smoothed)
    if val:
        vs, vl = zip(*val, strict=True)
        ax.plot(vs, vl, "o-", color="tab:orange", label="held-out text")
    ax.axhline(uniform, color="gray", ls="--", lw=1, label=f"uniform guess, log V = {uniform:.2f}")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_title("rnnfast train: next-character loss")
    # Finite losses only: max() returns an inf, or a NaN met first hides every later loss.
    top = max((v for v in losses if math.isfinite(v)), default=uniform)
    ax.set_ylim(0, max(uniform, top) * 1.05)
    ax.legend()
    fig.savefig(path, dpi=110)


def run(args: argparse.Namespace) -> int:
    if args.data is None:
        text, source = datasets.corpus_text(), "the embedded corpus"
    else:
        text, source = read_input("--data", args.data, "a text file", _utf8_text), args.data
    n_val = int(len(text) * args.val_fraction)
    if n_val < 2:
        n_val = 0
    train_text = text[: len(text) - n_val]
    if len(train_text) < args.batch + 1:
        raise UsageError(
            f"{source} has {len(train_text)} characters to train on; --batch {args.batch} "
            f"needs at least {args.batch + 1}"
        )
    out = output_dir(args.out)
    data = datasets.text_data(text)
    vocab_size = len(data.vocab)
    uniform = math.log(vocab_size)
    model = CharRNN(data.vocab, args.hidden, args.layers, cell=args.cell, seed=args.seed)
    val_ids = data.ids[len(train_text) :]
    n_params = sum(p.size for p in model.parameters().values())
    print(
        f"Training a {args.layers}-layer CharRNN ({_CELL_NAMES[args.cell]}hidden {args.hidden}, "
        f"{n_params:,} parameters) "
        f"on {source}: {len(train_text):,} characters, {vocab_size} distinct"
        + (f", {n_val:,} more held out" if n_val else "")
        + f". {args.steps} steps of {args.batch} x {args.bptt} characters; a uniform guess "
        f"scores log {vocab_size} = {uniform:.2f} nats per character.",
        flush=True,
    )
    prefix = train_text[0]
    val_history: list[tuple[int, float]] = []

    def report(progress: Progress, smoothed: float) -> None:
        line = f"--- step {progress.step}: smoothed loss {smoothed:.3f}"
        if n_val:
            val_history.append((progress.step, _heldout_loss(model, val_ids)))
            line += f", held-out {val_history[-1][1]:.3f}"
        sample = model.sample(prefix, 200, temperature=0.8, seed=args.seed + progress.step)
        tqdm.write(f"{line} ---\n{prefix}{sample}\n", file=sys.stdout)
        sys.stdout.flush()  # as it happens, also into a pipe or a log file

    model_path = out / "model.npz"
    start = time.perf_counter()
    with (
        threadpool_limits(args.threads),
        StopOnInterrupt(
            "Ctrl-C: stopping after this step to save the model "
            "(press it again to quit without saving)"
        ) as stop,
    ):
        with progress_bar(args.steps, "train") as bar:
            finite = _FiniteCheckpoint(model)
            monitor = Monitor(bar, "chars", args.sample_every, report, stop, finite.check)
            fit_kwargs = dict(
                steps=args.steps,
                bptt=args.bptt,
                batch_size=args.batch,
                lr=args.lr,
                optimizer=args.optimizer,
                callback=monitor,
                max_grad_norm=args.clip or None,
            )
            cluster_summary = ""
            if args.scheduler is None and args.workers is None:
                losses = model.fit(train_text, **fit_kwargs)
            else:
                losses, cluster_summary = _fit_on_dask(model, train_text, args, out, fit_kwargs)
        seconds = time.perf_counter() - start
        interrupted = stop.requested
        diverged = monitor.diverged_at
        if diverged is not None:  # back to the last weights that were all finite
            model.load_state_dict(finite.state)
            losses = losses[: len(monitor.smoothed)]  # the finite ones
        model_path = _save_somewhere(model, model_path)  # shielded from a first Ctrl-C
        final_val = _heldout_loss(model, val_ids) if n_val else None
        if final_val is not None and (not val_history or val_history[-1][0] != len(losses)):
            val_history.append((len(losses), final_val))
        final_sample = model.sample(prefix, 300, temperature=0.8, seed=args.seed)
    print(f"--- sample after {len(losses)} steps (temperature 0.8) ---\n{prefix}{final_sample}\n")
    plot_path = out / "loss.png"
    plotted = save_plot(
        plot_path, lambda p: _plot_training(p, losses, monitor.smoothed, val_history, uniform)
    )
    chars = monitor.last.tokens if monitor.last else 0
    smoothed = monitor.smoothed[-1] if losses else math.nan
    stopped = (
        f"Stopped by Ctrl-C after {len(losses)} of {args.steps} steps"
        if interrupted
        else f"Trained for {len(losses)} steps"
    )
    rate = chars / seconds if seconds > 0 else 0.0
    summary = f"{stopped} ({si(chars)} characters) in {seconds:.1f} s ({si(rate)} characters/s)."
    if losses:
        summary += (
            f" The loss {'fell' if smoothed < losses[0] else 'went'} from {losses[0]:.2f} to "
            f"{smoothed:.2f} nats per character "
            f"(smoothed), against {uniform:.2f} for a uniform guess over the {vocab_size} "
            f"characters"
            + (f"; on the held-out text it is {final_val:.2f}." if final_val is not None else ".")
        )
    summary += f" {cluster_summary}" if cluster_summary else ""
    files = [str(model_path), *([str(plot_path)] if plotted else []), str(out / "train.json")]
    summary += (
        f" Wrote {', '.join(files)}. Generate text with: "
        f"rnnfast sample --model {shlex.quote(str(model_path))}"
    )
    write_json(
        out / "train.json",
        {
            "command": args.command_line,
            "data": source,
            "characters": len(train_text),
            "held_out": n_val,
            "vocab_size": vocab_size,
            "uniform_loss": uniform,
            "config": {
                k: v for k, v in vars(args).items() if k not in ("run", "command", "command_line")
            },
            "steps": len(losses),
            "interrupted": interrupted,
            "seconds": seconds,
            "losses": losses,
            "smoothed_loss": smoothed,
            "held_out_losses": val_history,
            "summary": summary,
        },
    )
    print(summary)
    if diverged is not None:
        print(
            f"rnnfast train: the loss or the weights became NaN or Inf at step {diverged} "
            f"(--lr {args.lr} too large?): training stopped, and {model_path} holds the weights "
            f"after step {finite.step}, the last that were finite",
            file=sys.stderr,
        )
        return EXIT_FAILURE
    if model_path.parent != out:
        return EXIT_FAILURE
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


class _FiniteCheckpoint:
    """A copy of the model's weights after the last step that left them all finite."""

    def __init__(self, model: CharRNN) -> None:
        self.model = model
        self.state = model.state_dict()
        self.step = 0

    def check(self, progress: Progress) -> bool:
        """True if the step kept the loss and every weight finite (then kept as the copy)."""
        params = self.model.parameters().values()
        if not (math.isfinite(progress.loss) and all(np.isfinite(p).all() for p in params)):
            return False
        for key, value in self.model.parameters().items():
            self.state[key][...] = value
        self.step = progress.step
        return True


def _save_somewhere(model: CharRNN, path: Path) -> Path:
    """Save to ``path``; if that fails (the disk filled, the directory became unwritable),
    to a fallback file in the temporary directory, and say where: the training is not lost."""
    try:
        model.save(path)
        return path
    except OSError as exc:
        fd, fallback = tempfile.mkstemp(prefix="rnnfast-model-", suffix=".npz")
        os.close(fd)
        model.save(fallback)
        print(
            f"rnnfast train: cannot write {path} ({exc.strerror or exc}); saved the model to "
            f"{fallback} instead",
            file=sys.stderr,
        )
        return Path(fallback)


# Data-parallel training on Dask (rnnfast.distributed): --scheduler ADDRESS or --workers N.


def _fit_on_dask(
    model: CharRNN, text: str, args: argparse.Namespace, out: Path, fit_kwargs: dict
) -> tuple[list[float], str]:
    """``model.fit(text, **fit_kwargs)`` on a Dask cluster (an existing one, or N local worker
    processes started here and closed after): the losses and a sentence on the step time."""
    try:
        import distributed

        from rnnfast.distributed import fit_distributed
    except ImportError:
        raise UsageError(
            '--scheduler and --workers need Dask: pip install "rnnfast[distributed]"'
        ) from None
    monitor = fit_kwargs.pop("callback")
    compute: list[float] = []
    comm: list[float] = []

    def callback(progress: Any) -> bool:
        compute.append(progress.compute_seconds)
        comm.append(progress.communication_seconds)
        stop = monitor(progress)
        monitor.bar.set_postfix_str(
            f"{monitor.bar.postfix}, communication {1e3 * progress.communication_seconds:.0f} "
            "ms/step",
            refresh=False,
        )
        return stop

    with contextlib.ExitStack() as stack:
        if args.workers is not None:
            tqdm.write(f"Starting {args.workers} Dask workers on 127.0.0.1", file=sys.stderr)
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=args.workers,
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address="127.0.0.1:0",
                    env={
                        "OMP_NUM_THREADS": str(args.threads),
                        "OPENBLAS_NUM_THREADS": str(args.threads),
                    },
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(distributed.Client(args.scheduler, timeout=30))
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(
                    f"cannot reach the Dask scheduler {args.scheduler}: {exc}"
                ) from None
        n_workers = len(client.scheduler_info()["workers"])
        losses = fit_distributed(
            model,
            text,
            client,
            checkpoint=out / "checkpoint.npz",
            **fit_kwargs,
            callback=callback,
        )
    # Medians: the first step also pays for the workers' imports and the shards.
    step_compute = float(np.median(compute)) if compute else 0.0
    step_comm = float(np.median(comm)) if comm else 0.0
    summary = (
        f"On {n_workers} Dask workers, a step took (median) {1e3 * step_compute:.1f} ms of "
        f"compute on the slowest worker and {1e3 * step_comm:.1f} ms of communication and "
        f"scheduling ({100 * step_comm / max(1e-12, step_compute + step_comm):.0f}%)."
    )
    return losses, summary
