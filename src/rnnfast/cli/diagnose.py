"""``rnnfast diagnose``: vanishing and exploding gradients, measured and drawn."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from rnnfast import datasets, diagnostics
from rnnfast._tables import format_rows
from rnnfast.cli._common import (
    EXIT_OK,
    NON_NEGATIVE,
    NON_NEGATIVE_FLOAT,
    POSITIVE,
    Commands,
    UsageError,
    add_command,
    default_prefix,
    load_model_file,
    output_dir,
    threads_option,
    write_json,
)
from rnnfast.cli._plots import save_plot
from rnnfast.models import CELLS, CharRNN, SequenceRegressor


def add_parser(commands: Commands) -> None:
    """Add the ``rnnfast diagnose`` sub-parser."""
    p = add_command(
        commands,
        "diagnose",
        "show vanishing and exploding gradients",
        "Measure the norm of dL/dh_t against the distance from a loss on the last step, for "
        "random recurrent weights of several spectral radii (--scale) and both activations, "
        "or for the layers of a trained model (--model), or for the cells side by side "
        "(--cell: a CharRNN of each, at initialization and after --train-steps steps on the "
        "embedded corpus). Prints the per-step factor, the spectral radius and the saturated "
        "fraction; writes OUT/gradient_norms.png and .json.",
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
    p.add_argument(
        "--cell",
        choices=(*CELLS, "all"),
        nargs="+",
        default=None,
        help="compare these cells (all: rnn lstm gru), each a CharRNN at initialization and "
        "trained, in one plot",
    )
    p.add_argument(
        "--train-steps",
        type=POSITIVE,
        metavar="N",
        default=None,
        help="with --cell: training steps of each cell's model (default: 150)",
    )
    p.add_argument("--seed", type=NON_NEGATIVE, metavar="N", default=0, help="random seed")
    p.add_argument("--out", metavar="DIR", default="rnnfast-diagnose", help="output directory")
    threads_option(p)
    p.set_defaults(run=run)


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
        prefix = default_prefix(model)
        texts = [
            model.sample(prefix, args.seq_len, temperature=1.0, seed=rng) for _ in range(args.batch)
        ]
        return np.stack([model.encode(t) for t in texts], axis=1)
    return rng.standard_normal((args.seq_len, args.batch, model.input_size)).astype(model.dtype)


def _compare_cells(args: argparse.Namespace, out: Path) -> int:
    """``--cell``: a CharRNN of each cell on the embedded corpus, diagnosed at initialization
    and after training, drawn in one figure (a panel each)."""
    cells = list(CELLS) if "all" in args.cell else list(dict.fromkeys(args.cell))
    hidden = args.hidden or 32
    steps = args.train_steps or 150
    T, B = args.seq_len, args.batch
    data = datasets.corpus()
    text = datasets.corpus_text()
    if len(data.ids) < T * B:
        raise UsageError(f"--seq-len x --batch must be at most {len(data.ids)} characters")
    # B windows of T characters of the corpus, evenly spaced: what every model is measured on.
    starts = np.linspace(0, len(data.ids) - T, B).astype(np.int64)
    ids = np.stack([data.ids[s : s + T] for s in starts], axis=1)
    print(
        f"Gradient norm ||dL/d state_t|| against the distance from a loss on the last of {T} "
        f"steps, averaged over {B} windows of the embedded corpus, for a CharRNN (hidden "
        f"{hidden}) of each cell, at initialization and after {steps} training steps. An "
        "LSTM's state is (h, c).\n",
        flush=True,
    )
    panels: dict[str, list[diagnostics.Diagnosis]] = {"at initialization": [], "trained": []}
    table = [["cell", "model", "per-step factor", f"norm {T} back", "final loss", "verdict"]]
    with threadpool_limits(args.threads):
        for cell in cells:
            model = CharRNN(data.vocab, hidden, cell=cell, seed=args.seed)
            (row,) = diagnostics.model_diagnosis(model, ids, seed=args.seed)
            panels["at initialization"].append(row)
            losses = model.fit(text, steps=steps, bptt=25, batch_size=16, lr=5e-3)
            (trained,) = diagnostics.model_diagnosis(model, ids, seed=args.seed)
            panels["trained"].append(trained)
            loss = float(np.mean(losses[-10:]))
            for name, r, shown in (("initial", row, "-"), ("trained", trained, f"{loss:.3f}")):
                table.append(
                    [
                        cell,
                        name,
                        f"{r.decay_rate:.4g}",
                        f"{r.norms.norm[-1]:.3g}",
                        shown,
                        _verdict(r.decay_rate),
                    ]
                )
    print(format_rows(table, right=(2, 3, 4)))
    print(
        "\nfinal loss: nats per character, the mean of the last 10 training steps. The farther "
        "back a gradient still reaches, the longer the dependencies a cell can learn."
    )
    write_json(
        out / "gradient_norms.json",
        {
            "command": args.command_line,
            "what": f"CharRNN (hidden {hidden}) per cell, initial and after {steps} steps",
            "seq_len": T,
            "batch": B,
            "curves": [
                {"cell": r.cell, "model": panel, "decay_rate": r.decay_rate, "norms": r.norms.norm}
                for panel, rows in panels.items()
                for r in rows
            ],
        },
    )
    plot = out / "gradient_norms.png"
    title = f"rnnfast diagnose: the cells side by side (CharRNN, hidden {hidden})"
    drawn = save_plot(plot, lambda p: diagnostics.plot_cell_comparison(panels, p, title=title))
    print(f"Wrote {out / 'gradient_norms.json'}" + (f" and {plot}" if drawn else ""))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if args.cell is not None:
        given = [
            o
            for o, v in (
                ("--model", args.model),
                ("--scale", args.scale),
                ("--nonlinearity", args.nonlinearity),
                ("--input-scale", args.input_scale),
            )
            if v is not None
        ]
        if given:
            raise UsageError(f"{', '.join(given)} do not apply with --cell")
        return _compare_cells(args, output_dir(args.out))
    if args.train_steps is not None:
        raise UsageError("--train-steps applies with --cell only")
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
        model = load_model_file(args.model, (CharRNN, SequenceRegressor))
    out = output_dir(args.out)
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
    print(format_rows(table, right=(2, 3, 4, 5)))
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
    write_json(
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
    drawn = save_plot(plot, lambda p: diagnostics.plot_gradient_norms(rows, p, title=title))
    print(f"Wrote {out / 'gradient_norms.json'}" + (f" and {plot}" if drawn else ""))
    return EXIT_OK
