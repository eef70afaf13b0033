"""The ``rnnfast`` command line (also ``python -m rnnfast``).

Commands:

- ``rnnfast train``: a character-level RNN on the embedded corpus (or ``--data FILE``), with a
  progress bar, samples along the way, a model file, a loss curve and a summary.
- ``rnnfast sample``: text from a trained model file.
- ``rnnfast demo``: the alphabet puzzle (forward and backward) and a series forecast against
  the naive last-value forecast.
- ``rnnfast bench``: forward + backward timings of rnnfast and its peers.
- ``rnnfast diagnose``: vanishing and exploding gradients, measured and drawn.

A user mistake (a bad option, a missing or wrong file) prints one line on stderr and exits with
status 2; Ctrl-C exits with status 130 (``rnnfast train`` saves the model first).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

import rnnfast
from rnnfast import benchmarks, datasets, diagnostics, models
from rnnfast.models import OPTIMIZERS, CharRNN, SequenceRegressor
from rnnfast.train import Progress, batchify, softmax_cross_entropy

__all__ = ["UsageError", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

PLOT_HINT = "pip install 'rnnfast[plot]'"


class UsageError(Exception):
    """A user mistake: reported as one line on stderr, exit status 2."""


# --------------------------------------------------------------------------------------------
# Argument parsing


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none or the help gives it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action) or text


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a :class:`UsageError` (one line, status 2) rather
    than argparse's usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_in(low: float, *, low_open: bool = False) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low):
            raise argparse.ArgumentTypeError(
                f"must be a finite number {'>' if low_open else '>='} {low:g}, got {text}"
            )
        return value

    parse.__name__ = "number"
    return parse


def _fraction(text: str) -> float:
    value = _float_in(0.0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _size(text: str) -> tuple[int, int, int, int]:
    """``T,B,D,H``: four positive integers."""
    parts = text.split(",")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected T,B,D,H as four positive integers, e.g. 100,32,64,128; got {text!r}"
        )
    return values  # type: ignore[return-value]


POSITIVE = _int_at_least(1)
NON_NEGATIVE = _int_at_least(0)
POSITIVE_FLOAT = _float_in(0.0, low_open=True)
NON_NEGATIVE_FLOAT = _float_in(0.0)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnnfast`` argument parser (one sub-parser per command)."""
    parser = _Parser(
        prog="rnnfast",
        description="A fast, correct plain (Elman) RNN on the CPU: train, sample, demo, "
        "bench, diagnose.",
        epilog="Run 'rnnfast COMMAND --help' for a command's options.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"rnnfast {rnnfast.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help_text,
            description=description,
            formatter_class=_HelpFormatter,
            allow_abbrev=False,
        )
        return sub

    def threads_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--threads",
            type=POSITIVE,
            default=1,
            metavar="N",
            help="BLAS/OpenMP threads; at these sizes one is fastest, above all on a busy machine",
        )

    # train
    p = command(
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
        type=_fraction,
        metavar="F",
        default=0.1,
        help="fraction of the text held out to measure generalization (0: none)",
    )
    threads_option(p)
    p.set_defaults(run=_cmd_train)

    # sample
    p = command(
        "sample",
        "generate text from a trained model file",
        "Generate text with a CharRNN saved by 'rnnfast train' (or by CharRNN.save).",
    )
    p.add_argument("--model", metavar="FILE", required=True, help="model file (.npz)")
    p.add_argument(
        "--prefix",
        default=None,
        metavar="TEXT",
        help="text to start from (default: the start of a line, if the model knows line breaks)",
    )
    p.add_argument(
        "--length", type=NON_NEGATIVE, metavar="N", default=500, help="characters to generate"
    )
    p.add_argument(
        "--temperature",
        type=NON_NEGATIVE_FLOAT,
        metavar="T",
        default=0.8,
        help="randomness: lower is more conservative, 0 always takes the likeliest character",
    )
    p.add_argument(
        "--seed", type=NON_NEGATIVE, metavar="N", default=None, help="random seed (default: random)"
    )
    threads_option(p)
    p.set_defaults(run=_cmd_sample)

    # demo
    p = command(
        "demo",
        "the alphabet puzzle and a series forecast, trained in seconds",
        "Train a small RNN on the alphabet in both directions and grade its completions of "
        "'A, B, C, D, E, F...' and 'Z, Y, X, W, V...'; then forecast a synthetic price series "
        "and compare with the naive last-value forecast. Writes plots and models to OUT.",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="N", default=0, help="random seed")
    p.add_argument("--out", metavar="DIR", default="rnnfast-demo", help="output directory")
    p.add_argument(
        "--alphabet-steps",
        type=POSITIVE,
        metavar="N",
        default=600,
        help="training steps of the alphabet model",
    )
    p.add_argument(
        "--series-steps",
        type=POSITIVE,
        metavar="N",
        default=1200,
        help="training steps of the series model",
    )
    threads_option(p)
    p.set_defaults(run=_cmd_demo)

    # bench
    p = command(
        "bench",
        "time forward + backward against the NumPy reference, PyTorch and JAX",
        "Time forward + backward (the best of three rounds' medians) of rnnfast's compiled "
        "kernels and of each peer installed, in the same run, and print ms, GFLOP/s and "
        "rnnfast's speed-up.",
    )
    grid = p.add_mutually_exclusive_group()
    grid.add_argument("--quick", action="store_true", help="3 small cases instead of the full grid")
    grid.add_argument(
        "--sizes",
        type=_size,
        nargs="+",
        metavar="T,B,D,H",
        help="cases to time: steps, batch, input size, hidden size",
    )
    p.add_argument(
        "--dtype", choices=("float32", "float64"), default="float32", help="floating-point type"
    )
    p.add_argument(
        "--peers",
        nargs="+",
        choices=benchmarks.PEERS,
        default=None,
        metavar="PEER",
        help=f"implementations to time, of {', '.join(benchmarks.PEERS)} (default: all installed)",
    )
    p.add_argument(
        "--repeats",
        type=POSITIVE,
        metavar="N",
        default=None,
        help="timed repeats per case and round",
    )
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--plot", metavar="FILE", help="draw a bar chart (needs matplotlib)")
    p.set_defaults(run=_cmd_bench)

    # diagnose
    p = command(
        "diagnose",
        "show vanishing and exploding gradients",
        "Measure the norm of dL/dh_t against the distance from a loss on the last step, for "
        "random recurrent weights of several spectral radii (--scale) and both activations, "
        "or for the layers of a trained model (--model). Prints the per-step factor, the "
        "spectral radius and the saturated fraction; writes OUT/gradient_norms.png and .json.",
    )
    p.add_argument("--model", metavar="FILE", help="diagnose this trained model's RNN instead")
    p.add_argument(
        "--hidden", type=POSITIVE, metavar="N", default=None, help="hidden units (default: 64)"
    )
    p.add_argument("--seq-len", type=POSITIVE, metavar="N", default=100, help="steps")
    p.add_argument(
        "--batch", type=POSITIVE, metavar="N", default=16, help="sequences averaged over"
    )
    p.add_argument(
        "--nonlinearity",
        choices=("tanh", "relu"),
        default=None,
        help="only this activation (default: both)",
    )
    p.add_argument(
        "--scale",
        type=NON_NEGATIVE_FLOAT,
        metavar="S",
        nargs="+",
        default=None,
        help="spectral radii of the recurrent weights (default: 0.5 1.0 2.0)",
    )
    p.add_argument(
        "--input-scale",
        type=NON_NEGATIVE_FLOAT,
        default=None,
        metavar="S",
        help="standard deviation of the input's part of each pre-activation; larger values "
        "saturate tanh units (default: 0.1)",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="N", default=0, help="random seed")
    p.add_argument("--out", metavar="DIR", default="rnnfast-diagnose", help="output directory")
    threads_option(p)
    p.set_defaults(run=_cmd_diagnose)
    return parser


# --------------------------------------------------------------------------------------------
# Shared helpers: files, plots, progress, Ctrl-C


def _output_dir(path: str) -> Path:
    """Create the output directory (and its parents) if needed."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {path}: exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot create the directory ({exc.strerror})") from None
    return out


def _check_writable(option: str, path: str) -> None:
    """Fail early, before a long computation, if ``path`` cannot be a file we write."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: the directory {str(parent)!r} is not writable")


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"--data {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--data {path}: is a directory, not a text file") from None
    except UnicodeDecodeError as exc:
        raise UsageError(
            f"--data {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except OSError as exc:
        raise UsageError(f"--data {path}: cannot read it ({exc.strerror})") from None


def _load_model(path: str, kinds: Sequence[type[CharRNN] | type[SequenceRegressor]]) -> Any:
    """Load a model file as whichever of ``kinds`` it holds; a missing, unreadable or wrong
    file (one that holds another kind says which) is a UsageError."""
    try:
        return models.load_model(path, kinds)
    except FileNotFoundError:
        raise UsageError(f"--model {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--model {path}: is a directory, not a model file") from None
    except OSError as exc:
        raise UsageError(f"--model {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"--model {path}: {exc}") from None


def _jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as plain numbers and lists, paths as strings
    and NaN or infinite floats as None (null), so that the JSON written is standard."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented, standard JSON (see :func:`_jsonable`)."""
    text = json.dumps(_jsonable(data), indent=1, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def _save_plot(path: Path | str, draw: Callable[[Path], None]) -> bool:
    """Run ``draw(path)``; without matplotlib, print a one-line notice instead.

    Returns whether the plot was written.
    """
    try:
        draw(Path(path))
    except ImportError as exc:
        if not (exc.name or "").startswith("matplotlib"):
            raise
        print(
            f"note: matplotlib is not installed, so {path} was not drawn ({PLOT_HINT})",
            file=sys.stderr,
        )
        return False
    return True


def _figure(**kwargs: Any) -> Any:
    """A matplotlib Figure (no pyplot: no GUI backend, no global state); ImportError
    without matplotlib."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _progress_bar(total: int, desc: str, unit: str = "step") -> tqdm:
    """A tqdm bar on stderr, refreshed often on a terminal and rarely in a log file."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.2 if interactive else 2.0,
        ascii=not _stream_is_utf8(sys.stderr),
    )


def _stream_is_utf8(stream: Any) -> bool:
    return "utf" in (getattr(stream, "encoding", None) or "").lower()


def _si(value: float) -> str:
    """A rate with an SI suffix: 152k, 1.3M."""
    return tqdm.format_sizeof(value, divisor=1000).strip()


def _smoothing(steps: int) -> float:
    """The moving-average factor for a run of ``steps``: a window of a fiftieth of the run,
    between 5 and 50 steps."""
    return 1.0 - 1.0 / min(50, max(5, steps // 50))


class _Smoother:
    """Exponential moving average with bias correction (as Adam's moments): meaningful
    from the first value on."""

    def __init__(self, beta: float) -> None:
        self.beta = beta
        self._avg = 0.0
        self._count = 0

    def update(self, value: float) -> float:
        self._count += 1
        self._avg = self.beta * self._avg + (1 - self.beta) * value
        return self.value

    @property
    def value(self) -> float:
        return self._avg / (1 - self.beta**self._count) if self._count else math.nan


class _StopOnInterrupt:
    """Inside the block, the first Ctrl-C (SIGINT) only sets ``requested``, so training can
    stop after the current step and save; a second Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write(self.message, file=sys.stderr)

    def __enter__(self) -> _StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


class _Monitor:
    """The ``callback`` of ``fit`` calls (one or several in a row): a progress bar with the
    loss, the smoothed loss and the throughput, an optional action every ``every`` steps, and
    an optional stop flag."""

    def __init__(
        self,
        bar: tqdm,
        unit: str,
        every: int = 0,
        on_every: Callable[[Progress, float], None] | None = None,
        stop: _StopOnInterrupt | None = None,
    ) -> None:
        self.bar = bar
        self.unit = unit
        self.every = every
        self.on_every = on_every
        self.stop = stop
        self.smoother = _Smoother(_smoothing(bar.total or 0))
        self.last: Progress | None = None
        self.smoothed: list[float] = []
        """The smoothed loss after every step."""

    def __call__(self, progress: Progress) -> bool:
        self.last = progress
        smoothed = self.smoother.update(progress.loss)
        self.smoothed.append(smoothed)
        self.bar.set_postfix_str(
            f"loss {progress.loss:.3f}, smoothed {smoothed:.3f}, "
            f"{_si(progress.tokens_per_sec)} {self.unit}/s",
            refresh=False,
        )
        self.bar.update(1)
        if self.every and self.on_every and progress.step % self.every == 0:
            self.on_every(progress, smoothed)
        return self.stop is not None and self.stop.requested


# --------------------------------------------------------------------------------------------
# train


def _heldout_loss(model: CharRNN, ids: np.ndarray) -> float:
    """Next-character cross-entropy of ``model`` on ``ids`` (eval mode, fresh state), read as
    up to 8 parallel streams."""
    streams = max(1, min(8, (len(ids) - 1) // 64))
    x, y = batchify(ids[:-1], streams), batchify(ids[1:], streams)
    with model._evaluating():
        logits, _ = model.forward(x)
    return float(softmax_cross_entropy(logits, y)[0])


def _plot_losses(ax: Any, losses: Sequence[float], smoothed: Sequence[float]) -> None:
    """Each step's loss, faint, and the smoothed loss over it."""
    steps = np.arange(1, len(losses) + 1)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="loss of each step")
    ax.plot(steps, smoothed, color="tab:blue", lw=2, label="smoothed")
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)


def _plot_training(
    path: Path,
    losses: Sequence[float],
    smoothed: Sequence[float],
    val: Sequence[tuple[int, float]],
    uniform: float,
) -> None:
    fig = _figure(figsize=(7, 4.2))
    ax = fig.subplots()
    _plot_losses(ax, losses, smoothed)
    if val:
        vs, vl = zip(*val, strict=True)
        ax.plot(vs, vl, "o-", color="tab:orange", label="held-out text")
    ax.axhline(uniform, color="gray", ls="--", lw=1, label=f"uniform guess, log V = {uniform:.2f}")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_title("rnnfast train: next-character loss")
    ax.set_ylim(0, max(uniform, max(losses, default=uniform)) * 1.05)
    ax.legend()
    fig.savefig(path, dpi=110)


def _cmd_train(args: argparse.Namespace) -> int:
    if args.data is None:
        text, source = datasets.corpus_text(), "the embedded corpus"
    else:
        text, source = _read_text(args.data), args.data
    n_val = int(len(text) * args.val_fraction)
    if n_val < 2:
        n_val = 0
    train_text = text[: len(text) - n_val]
    if len(train_text) < args.batch + 1:
        raise UsageError(
            f"{source} has {len(train_text)} characters to train on; --batch {args.batch} "
            f"needs at least {args.batch + 1}"
        )
    out = _output_dir(args.out)
    data = datasets.text_data(text)
    vocab_size = len(data.vocab)
    uniform = math.log(vocab_size)
    model = CharRNN(data.vocab, args.hidden, args.layers, seed=args.seed)
    val_ids = data.ids[len(train_text) :]
    n_params = sum(p.size for p in model.parameters().values())
    print(
        f"Training a {args.layers}-layer CharRNN (hidden {args.hidden}, {n_params:,} parameters) "
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
        _StopOnInterrupt(
            "Ctrl-C: stopping after this step to save the model "
            "(press it again to quit without saving)"
        ) as stop,
    ):
        with _progress_bar(args.steps, "train") as bar:
            monitor = _Monitor(bar, "chars", args.sample_every, report, stop)
            losses = model.fit(
                train_text,
                steps=args.steps,
                bptt=args.bptt,
                batch_size=args.batch,
                lr=args.lr,
                optimizer=args.optimizer,
                callback=monitor,
                max_grad_norm=args.clip or None,
            )
        seconds = time.perf_counter() - start
        interrupted = stop.requested
        model.save(model_path)  # first, and still shielded from a first Ctrl-C
        final_val = _heldout_loss(model, val_ids) if n_val else None
        if final_val is not None and (not val_history or val_history[-1][0] != len(losses)):
            val_history.append((len(losses), final_val))
        final_sample = model.sample(prefix, 300, temperature=0.8, seed=args.seed)
    print(f"--- sample after {len(losses)} steps (temperature 0.8) ---\n{prefix}{final_sample}\n")
    plot_path = out / "loss.png"
    plotted = _save_plot(
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
    summary = f"{stopped} ({_si(chars)} characters) in {seconds:.1f} s ({_si(rate)} characters/s)."
    if losses:
        summary += (
            f" The loss {'fell' if smoothed < losses[0] else 'went'} from {losses[0]:.2f} to "
            f"{smoothed:.2f} nats per character "
            f"(smoothed), against {uniform:.2f} for a uniform guess over the {vocab_size} "
            f"characters"
            + (f"; on the held-out text it is {final_val:.2f}." if final_val is not None else ".")
        )
    files = [str(model_path), *([str(plot_path)] if plotted else []), str(out / "train.json")]
    summary += (
        f" Wrote {', '.join(files)}. Generate text with: "
        f"rnnfast sample --model {shlex.quote(str(model_path))}"
    )
    _write_json(
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
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


# --------------------------------------------------------------------------------------------
# sample


def _default_prefix(model: CharRNN) -> str:
    """Where sampling starts without a prefix: a line break (the start of a line of text), or
    the first character of a vocabulary without one."""
    return "\n" if "\n" in model.vocab else model.vocab[0]


def _cmd_sample(args: argparse.Namespace) -> int:
    model = _load_model(args.model, (CharRNN,))
    prefix, show_prefix = args.prefix, True
    if prefix is None:
        prefix = _default_prefix(model)
        show_prefix = prefix != "\n"
    if prefix == "":
        raise UsageError("--prefix must have at least one character")
    unknown = sorted({c for c in prefix if c not in model.vocab})
    if unknown:
        raise UsageError(
            f"--prefix has characters the model does not know: {''.join(unknown)!r} "
            f"(it knows {model.vocab!r})"
        )
    with threadpool_limits(args.threads):
        text = model.sample(prefix, args.length, temperature=args.temperature, seed=args.seed)
    out = (prefix if show_prefix else "") + text
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# demo


def _spaced(letters: str) -> str:
    """'ABC' -> 'A, B, C' (the line break that ends a run is left out)."""
    return ", ".join(letters.rstrip("\n"))


def _alphabet_demo(args: argparse.Namespace, out: Path) -> tuple[float, list[float]]:
    """Train on the alphabet both ways and grade the completions; returns (letter accuracy
    over every two-letter prompt, losses)."""
    data = datasets.alphabet(2000, seed=args.seed)
    print(
        "1. The alphabet puzzle. People complete 'A, B, C, D, E, F ...' at once and stumble "
        "on 'Z, Y, X, W, V ...'.\n   A CharRNN (hidden 64) learns both directions from "
        f"{len(data.text):,} characters of alphabet runs, one per line.",
        flush=True,
    )
    model = CharRNN(data.vocab, 64, seed=args.seed)
    with _progress_bar(args.alphabet_steps, "   alphabet") as bar:
        monitor = _Monitor(bar, "chars")
        start = time.perf_counter()
        losses = model.fit(
            data.text, steps=args.alphabet_steps, bptt=32, batch_size=16, lr=1e-2, callback=monitor
        )
        seconds = time.perf_counter() - start
    floor = datasets.alphabet_loss_floor()
    print(
        f"   Trained in {seconds:.1f} s: loss {monitor.smoothed[-1]:.3f} nats per "
        f"character (smoothed); {floor:.3f} is the best possible, as where a run starts and "
        "which way it goes are random.\n"
    )

    def complete(prompt: str, answer: str) -> str:
        return model.sample(prompt, len(answer), temperature=0)

    shown = ["ABCDEF", "ZYXWV", "HI", "PQ", "WX", "RQ", "KJ", "DC"]
    width = max(len(_spaced(s)) for s in shown)
    for letters in shown:
        q = next(q for q in datasets.alphabet_prompts(len(letters)) if q.prompt[1:] == letters)
        got = complete(q.prompt, q.answer)
        verdict = "correct" if got == q.answer else f"WRONG (expected {_spaced(q.answer)})"
        print(f"   {_spaced(letters):<{width}} -> {_spaced(got) or '(end)'}   {verdict}")

    prompts = datasets.alphabet_prompts(2)
    right = total = 0
    exact = {True: 0, False: 0}
    for q in prompts:
        got = complete(q.prompt, q.answer)
        right += sum(a == b for a, b in zip(got, q.answer, strict=True))
        total += len(q.answer)
        exact[q.forward] += got == q.answer
    per_direction = len(prompts) // 2
    accuracy = right / total
    print(
        f"\n   Accuracy over all {len(prompts)} two-letter prompts: {accuracy:.1%} of {total} "
        f"letters right (forward: {exact[True]}/{per_direction} completions exact, backward: "
        f"{exact[False]}/{per_direction}). Backward is no harder for the RNN: it read both.\n"
    )
    model.save(out / "alphabet.npz")

    def draw(path: Path) -> None:
        fig = _figure(figsize=(6.5, 3.8))
        ax = fig.subplots()
        _plot_losses(ax, losses, monitor.smoothed)
        ax.axhline(floor, color="gray", ls="--", label=f"best possible ({floor:.2f})")
        ax.set_ylabel("nats per character")
        ax.set_title(f"Alphabet both ways: {accuracy:.1%} of completion letters right")
        ax.legend()
        fig.savefig(path, dpi=110)

    _save_plot(out / "alphabet_loss.png", draw)
    return accuracy, losses


def _series_demo(args: argparse.Namespace, out: Path) -> tuple[float, float]:
    """Forecast a synthetic price one step ahead; returns (RNN RMSE, naive RMSE) on the
    held-out tail."""
    series = datasets.synthetic_series(4000, seed=args.seed)
    n_train = int(0.8 * len(series))
    print(
        f"2. Series forecasting. A synthetic price (trend + seasonality + noise, "
        f"{len(series):,} steps); a SequenceRegressor (hidden 64) learns from the first "
        f"{n_train:,} and forecasts each next value of the last {len(series) - n_train:,}.",
        flush=True,
    )
    model = SequenceRegressor(hidden_size=64, seed=args.seed)
    fast = max(1, (2 * args.series_steps) // 3)
    with _progress_bar(args.series_steps, "   series") as bar:
        monitor = _Monitor(bar, "values")
        # A larger learning rate first, then a smaller one to settle (a step decay).
        model.fit(series[:n_train], steps=fast, bptt=50, batch_size=16, lr=5e-3, callback=monitor)
        if args.series_steps > fast:
            model.fit(
                series[:n_train],
                steps=args.series_steps - fast,
                bptt=50,
                batch_size=16,
                lr=1e-3,
                callback=monitor,
            )
    pred = model.predict(series)  # pred[t] forecasts series[t + 1]
    naive = SequenceRegressor.last_value_baseline(series)
    t = np.arange(n_train - 1, len(series) - 1)
    rnn_rmse = float(np.sqrt(np.mean((pred[t] - series[t + 1]) ** 2)))
    naive_rmse = float(np.sqrt(np.mean((naive[t] - series[t + 1]) ** 2)))
    print(
        f"\n   One-step-ahead error on the held-out steps (RMSE, in price units):\n"
        f"     RNN                    {rnn_rmse:.3f}\n"
        f"     naive (last value)     {naive_rmse:.3f}\n"
        + (
            f"   The RNN's error is {rnn_rmse / naive_rmse:.2f}x the naive forecast's: it has "
            "learned the seasonal swing that the last value lags behind.\n"
            if rnn_rmse < naive_rmse
            else "   The RNN did not beat the naive forecast this time; more --series-steps "
            "may help.\n"
        )
    )
    model.save(out / "series.npz")

    def draw(path: Path) -> None:
        fig = _figure(figsize=(8, 4))
        ax = fig.subplots()
        window = t[-200:]
        ax.plot(window + 1, series[window + 1], color="black", lw=1.5, label="actual")
        ax.plot(window + 1, pred[window], color="tab:orange", label=f"RNN (RMSE {rnn_rmse:.2f})")
        ax.plot(
            window + 1,
            naive[window],
            color="tab:gray",
            ls="--",
            label=f"last value (RMSE {naive_rmse:.2f})",
        )
        ax.set_xlabel("step")
        ax.set_ylabel("price")
        ax.set_title("One-step-ahead forecasts, last 200 held-out steps")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.savefig(path, dpi=110)

    _save_plot(out / "series.png", draw)
    return rnn_rmse, naive_rmse


def _cmd_demo(args: argparse.Namespace) -> int:
    out = _output_dir(args.out)
    with threadpool_limits(args.threads):
        _alphabet_demo(args, out)
        _series_demo(args, out)
    print(
        f"Models and plots are in {out}/. Ask the alphabet model yourself: "
        f"rnnfast sample --model {shlex.quote(str(out / 'alphabet.npz'))} --prefix ZY "
        "--temperature 0 --length 25"
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# bench


def _plot_bench(path: Path, results: Sequence[dict[str, Any]]) -> None:
    cases = list(dict.fromkeys((r["T"], r["B"], r["D"], r["H"], r["dtype"]) for r in results))
    peers = list(dict.fromkeys(r["peer"] for r in results))
    ms = {(r["T"], r["B"], r["D"], r["H"], r["dtype"], r["peer"]): r["median_ms"] for r in results}
    fig = _figure(figsize=(max(6.0, 1.3 * len(cases) + 2), 4.5))
    ax = fig.subplots()
    width = 0.8 / max(len(peers), 1)
    x = np.arange(len(cases))
    for i, peer in enumerate(peers):
        heights = [ms.get((*case, peer), np.nan) for case in cases]
        ax.bar(x + (i - (len(peers) - 1) / 2) * width, heights, width, label=peer)
    ax.set_xticks(x, [f"{t}x{b}x{d}x{h}\n{dt}" for t, b, d, h, dt in cases], fontsize="small")
    ax.set_yscale("log")
    ax.set_xlabel("case: T x B x D x H")
    ax.set_ylabel("median forward + backward (ms)")
    ax.set_title("rnnfast bench")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)


def _cmd_bench(args: argparse.Namespace) -> int:
    available = list(benchmarks.available_peers())
    if args.peers:
        missing = [p for p in args.peers if p not in available]
        if missing:
            raise UsageError(
                f"--peers: {', '.join(missing)} not installed here (available: "
                f"{', '.join(available)})"
            )
    for option in ("json", "plot"):
        if getattr(args, option):
            _check_writable(f"--{option}", getattr(args, option))
    if args.sizes:
        cases = [benchmarks.Case(*size, dtype=args.dtype) for size in args.sizes]
    else:
        grid = benchmarks.QUICK_GRID if args.quick else benchmarks.ISSUE_GRID
        cases = [dataclasses.replace(case, dtype=args.dtype) for case in grid]
    peers = args.peers or available
    print(f"Timing forward + backward of {len(cases)} cases with {', '.join(peers)}.", flush=True)
    with _progress_bar(len(cases), "bench", unit="case") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        results = benchmarks.run(
            cases,
            peers=args.peers,
            repeats=args.repeats,
            progress=progress,
            gemm_roof=benchmarks.ROOF_GEMM_SIZE if "rnnfast" in peers else None,
        )
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    machine = benchmarks.machine()
    command = args.command_line
    print(f"\n$ {command}\n{date}, {machine}\n")
    print(benchmarks.format_table(results))
    if args.json:
        _write_json(
            args.json,
            {
                "date": date,
                "machine": machine,
                "command": command,
                "results": results,
            },
        )
        print(f"\nWrote {args.json}")
    if args.plot and _save_plot(args.plot, lambda p: _plot_bench(p, results)):
        print(f"Wrote {args.plot}")
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# diagnose


def _format_table(rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """Rows of cells as aligned text columns, a rule under the first row (the header);
    the columns numbered in ``right`` are right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _verdict(rate: float) -> str:
    """How fast a per-step factor shrinks or grows the gradient, in words."""
    if not math.isfinite(rate):
        return "overflowed"
    if rate == 0:
        return "vanishes at once (no unit passes a gradient)"
    if abs(math.log(rate)) < 0.01:
        return "neither vanishes nor explodes"
    steps = math.log(10) / abs(math.log(rate))
    kind = "vanishing" if rate < 1 else "exploding"
    sign = "/" if rate < 1 else "x"
    return f"{kind}: {sign}10 every {steps:.3g} steps"


def _model_inputs(model: CharRNN | SequenceRegressor, args: argparse.Namespace) -> np.ndarray:
    """What a trained model's RNN reads in the diagnosis: for a CharRNN, ``--batch`` texts of
    ``--seq-len`` characters it writes itself; for a SequenceRegressor, standard-normal
    values (its standardized units)."""
    rng = np.random.default_rng(args.seed)
    if isinstance(model, CharRNN):
        prefix = _default_prefix(model)
        texts = [
            model.sample(prefix, args.seq_len, temperature=1.0, seed=rng) for _ in range(args.batch)
        ]
        return np.stack([model.encode(t) for t in texts], axis=1)
    return rng.standard_normal((args.seq_len, args.batch, model.input_size)).astype(model.dtype)


def _cmd_diagnose(args: argparse.Namespace) -> int:
    if args.model is not None:
        given = [
            o
            for o, v in (
                ("--hidden", args.hidden),
                ("--scale", args.scale),
                ("--nonlinearity", args.nonlinearity),
                ("--input-scale", args.input_scale),
            )
            if v is not None
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} describe random weights; they do not apply with --model"
            )
        model = _load_model(args.model, (CharRNN, SequenceRegressor))
    out = _output_dir(args.out)
    with threadpool_limits(args.threads):
        if args.model is not None:
            rows = diagnostics.model_diagnosis(model, _model_inputs(model, args), seed=args.seed)
            title = f"rnnfast diagnose: {type(model).__name__} in {Path(args.model).name}"
            what = (
                f"the {type(model).__name__} in {args.model} ({model.rnn.num_layers} "
                f"layer{'s' if model.rnn.num_layers > 1 else ''}, hidden {model.rnn.hidden_size}, "
                f"{model.rnn.nonlinearity})"
            )
        else:
            hidden = args.hidden or 64
            input_scale = 0.1 if args.input_scale is None else args.input_scale
            rows = diagnostics.scale_sweep(
                hidden=hidden,
                seq_len=args.seq_len,
                scales=args.scale or (0.5, 1.0, 2.0),
                nonlinearities=(args.nonlinearity,) if args.nonlinearity else ("tanh", "relu"),
                batch=args.batch,
                input_scale=input_scale,
                seed=args.seed,
            )
            title = (
                f"rnnfast diagnose: random weights, hidden {hidden}, input scale {input_scale:g}"
            )
            what = (
                f"random RNNs (hidden {hidden}, input scale {input_scale:g}) whose recurrent "
                "weights are an orthogonal matrix times each scale"
            )
    T = args.seq_len
    print(
        f"Gradient norm ||dL/dh_t|| against the distance from a loss on the last of {T} steps, "
        f"averaged over {args.batch} sequences, for {what}.\n"
    )
    head = ["activation", "weights", "spectral radius", "per-step factor", f"norm {T} back"]
    table = [[*head, "flat units", "verdict"]]
    for r in rows:
        table.append(
            [
                r.nonlinearity,
                r.label,
                f"{r.spectral_radius:.3f}",
                f"{r.decay_rate:.4g}",
                f"{r.norms.norm[-1]:.3g}",
                f"{r.saturation:.1%}",
                _verdict(r.decay_rate),
            ]
        )
    print(_format_table(table, right=(2, 3, 4, 5)))
    print(
        f"\nflat units: saturated tanh (|h| > {diagnostics.SATURATION_THRESHOLD}) or inactive "
        "ReLU (h <= 0) states, through which no gradient passes."
        + (
            " ReLU passes gradients through its active units only, about half of them, so its "
            "gradients hold steady near a spectral radius of sqrt(2) rather than 1."
            if any(r.nonlinearity == "relu" for r in rows)
            else ""
        )
    )
    _write_json(
        out / "gradient_norms.json",
        {
            "command": args.command_line,
            "what": what,
            "seq_len": T,
            "batch": args.batch,
            "curves": [
                {
                    "label": r.label,
                    "nonlinearity": r.nonlinearity,
                    "spectral_radius": r.spectral_radius,
                    "decay_rate": r.decay_rate,
                    "saturation": r.saturation,
                    "norms": r.norms.norm,
                }
                for r in rows
            ],
        },
    )
    plot = out / "gradient_norms.png"
    drawn = _save_plot(plot, lambda p: diagnostics.plot_gradient_norms(rows, p, title=title))
    print(f"Wrote {out / 'gradient_norms.json'}" + (f" and {plot}" if drawn else ""))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    prog = "rnnfast"
    try:
        args = parser.parse_args(args_list)
        args.command_line = shlex.join(["rnnfast", *args_list])
        prog = f"rnnfast {args.command}"
        return int(args.run(args))
    except UsageError as exc:
        message = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `rnnfast sample ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    except OSError as exc:  # the system refused to write an output: not a bug of ours
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
