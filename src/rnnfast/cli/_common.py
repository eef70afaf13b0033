"""What the commands share: exit codes and :class:`UsageError`, argument types, the
``--threads`` option, output files and directories, model files, JSON, the progress bar and
its loss monitor, and Ctrl-C handling."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from rnnfast import models
from rnnfast.models import CharRNN, SequenceRegressor
from rnnfast.train import Progress

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class UsageError(Exception):
    """A user mistake: reported as one line on stderr, exit status 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except where there is none or the help gives it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action) or text


def int_at_least(minimum: int) -> Callable[[str], int]:
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


def float_in(low: float, *, low_open: bool = False) -> Callable[[str], float]:
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


def fraction(text: str) -> float:
    value = float_in(0.0)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


POSITIVE = int_at_least(1)
NON_NEGATIVE = int_at_least(0)
POSITIVE_FLOAT = float_in(0.0, low_open=True)
NON_NEGATIVE_FLOAT = float_in(0.0)


Commands = Any
"""The sub-parser collection of the ``rnnfast`` parser (``argparse._SubParsersAction``)."""


def add_command(
    commands: Commands, name: str, help_text: str, description: str
) -> argparse.ArgumentParser:
    """A command's sub-parser, with the shared help formatter (defaults shown)."""
    return commands.add_parser(
        name,
        help=help_text,
        description=description,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )


def threads_option(sub: argparse.ArgumentParser) -> None:
    """The ``--threads N`` option of the commands that compute."""
    sub.add_argument(
        "--threads",
        type=POSITIVE,
        default=1,
        metavar="N",
        help="BLAS/OpenMP threads; at these sizes one is fastest, above all on a busy machine",
    )


def output_dir(path: str) -> Path:
    """Create the output directory (and its parents) if needed."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"--out {path}: exists and is not a directory") from None
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot create the directory ({exc.strerror})") from None
    # Written to, not os.access'ed: that says yes to root, and to read-only file systems.
    probe = out / f".rnnfast-write-test-{os.getpid()}"
    try:
        probe.open("xb").close()
        probe.unlink()
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write into it ({exc.strerror})") from None
    return out


MAX_INPUT_BYTES = 1 << 28
"""The largest input file a command reads (256 MiB)."""


def _check_regular(path: str, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file")


def read_bounded(path: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_INPUT_BYTES` (ValueError otherwise:
    ``/dev/zero``, a pipe or a huge file would be read without bound)."""
    _check_regular(path, os.stat(path))  # before opening: a FIFO's open would block
    with open(path, "rb") as f:
        _check_regular(path, os.fstat(f.fileno()))  # what was opened
        data = f.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise ValueError(f"larger than the {MAX_INPUT_BYTES >> 20} MiB limit")
    return data


def check_writable(option: str, path: str) -> None:
    """Fail early, before a long computation, if ``path`` cannot be a file we write."""
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {path}: is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: the directory {str(parent)!r} is not writable")


T = TypeVar("T")


def read_input(option: str, path: str, what: str, read: Callable[[str], T]) -> T:
    """``read(path)`` for the file given by ``option``; a missing or unreadable file, or one
    that ``read`` refuses with a ValueError, is a UsageError (``what``: what the file should
    be, e.g. "a model file")."""
    try:
        return read(path)
    except FileNotFoundError:
        raise UsageError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{option} {path}: is a directory, not {what}") from None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot read it ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{option} {path}: {exc}") from None


def load_model_file(path: str, kinds: Sequence[type[CharRNN] | type[SequenceRegressor]]) -> Any:
    """Load ``--model path`` as whichever of ``kinds`` it holds; a missing, unreadable or
    wrong file (one that holds another kind says which) is a UsageError."""
    return read_input("--model", path, "a model file", lambda p: models.load_model(p, kinds))


def default_prefix(model: CharRNN) -> str:
    """Where sampling starts without a prefix: a line break (the start of a line of text), or
    the first character of a vocabulary without one."""
    return "\n" if "\n" in model.vocab else model.vocab[0]


def jsonable(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as plain numbers and lists, paths as strings
    and NaN or infinite floats as None (null), so that the JSON written is standard."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path | str, data: Any) -> None:
    """Write ``data`` as indented, standard JSON (see :func:`jsonable`)."""
    text = json.dumps(jsonable(data), indent=1, allow_nan=False)
    Path(path).write_text(text + "\n", encoding="utf-8")


def progress_bar(total: int, desc: str, unit: str = "step") -> tqdm:
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


def si(value: float) -> str:
    """A rate with an SI suffix: 152k, 1.3M."""
    return tqdm.format_sizeof(value, divisor=1000).strip()


def _smoothing(steps: int) -> float:
    """The moving-average factor for a run of ``steps``: a window of a fiftieth of the run,
    between 5 and 50 steps."""
    return 1.0 - 1.0 / min(50, max(5, steps // 50))


class Smoother:
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


class StopOnInterrupt:
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

    def __enter__(self) -> StopOnInterrupt:
        self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)


class Monitor:
    """The ``callback`` of ``fit`` calls (one or several in a row): a progress bar with the
    loss, the smoothed loss and the throughput, an optional action every ``every`` steps, and
    an optional stop flag."""

    def __init__(
        self,
        bar: tqdm,
        unit: str,
        every: int = 0,
        on_every: Callable[[Progress, float], None] | None = None,
        stop: StopOnInterrupt | None = None,
        healthy: Callable[[Progress], bool] | None = None,
    ) -> None:
        self.bar = bar
        self.healthy = healthy
        self.diverged_at: int | None = None
        """The step after which ``healthy`` said no (training then stops), or None."""
        self.unit = unit
        self.every = every
        self.on_every = on_every
        self.stop = stop
        self.smoother = Smoother(_smoothing(bar.total or 0))
        self.last: Progress | None = None
        self.smoothed: list[float] = []
        """The smoothed loss after every step."""

    def __call__(self, progress: Progress) -> bool:
        if self.healthy is not None and not self.healthy(progress):
            self.diverged_at = progress.step
            return True
        self.last = progress
        smoothed = self.smoother.update(progress.loss)
        self.smoothed.append(smoothed)
        self.bar.set_postfix_str(
            f"loss {progress.loss:.3f}, smoothed {smoothed:.3f}, "
            f"{si(progress.tokens_per_sec)} {self.unit}/s",
            refresh=False,
        )
        self.bar.update(1)
        if self.every and self.on_every and progress.step % self.every == 0:
            self.on_every(progress, smoothed)
        return self.stop is not None and self.stop.requested
