"""``rnnfast sample``: text from a trained model file."""

from __future__ import annotations

import argparse
import sys

from threadpoolctl import threadpool_limits

from rnnfast.cli._common import (
    EXIT_FAILURE,
    EXIT_OK,
    NON_NEGATIVE,
    NON_NEGATIVE_FLOAT,
    Commands,
    UsageError,
    add_command,
    default_prefix,
    load_model_file,
    threads_option,
)
from rnnfast.models import CharRNN


def add_parser(commands: Commands) -> None:
    """Add the ``rnnfast sample`` sub-parser."""
    p = add_command(
        commands,
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
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    model = load_model_file(args.model, (CharRNN,))
    prefix, show_prefix = args.prefix, True
    if prefix is None:
        prefix = default_prefix(model)
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
        try:
            text = model.sample(prefix, args.length, temperature=args.temperature, seed=args.seed)
        except ValueError as exc:  # finite weights so large that the logits overflow
            print(f"rnnfast sample: error: {args.model}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
    out = (prefix if show_prefix else "") + text
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return EXIT_OK
