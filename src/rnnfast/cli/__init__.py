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

One module per command (``train``, ``sample``, ``demo``, ``bench``, ``diagnose``: each an
``add_parser`` and a ``run``); what they share is in ``_common`` (argument types, exit codes,
files, JSON, progress, Ctrl-C), ``_plots`` and ``_tables``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from typing import NoReturn

import rnnfast
from rnnfast.cli import bench, demo, diagnose, sample, train
from rnnfast.cli._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
)

__all__ = ["UsageError", "build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a :class:`UsageError` (one line, status 2) rather
    than argparse's usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


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
    for command in (train, sample, demo, bench, diagnose):
        command.add_parser(commands)
    return parser


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
