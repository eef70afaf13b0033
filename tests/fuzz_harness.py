"""Fuzz harness: random valid and invalid calls of every public entry point, in a child process.

``test_fuzz.py`` runs this file as a script, one child process per entry point::

    python tests/fuzz_harness.py --entry rnn_forward --cases 1100 --seed 0 --last-case FILE

The child runs ``--cases`` Hypothesis examples with ``faulthandler`` on. Each example is a
:class:`Case`: a call plus what must come of it. The only outcomes allowed are

a correct result for a valid case, a ``ValueError`` or ``TypeError`` naming an argument at
fault for an invalid one, and the inputs unchanged in both.

Anything else (another exception, a wrong result, a crash) fails the child; a crash kills it, so
the parent sees a non-zero exit status. Before each call the child writes the case's description
to ``--last-case``, so the parent can say which case crashed it. At exit it prints one line
``FUZZ-RESULT {json}`` with the number of cases run by outcome.

Validity is decided by a model of the documented input policy, not by asking rnnfast
(``fuzz_common.py`` says how).

The cases are drawn by one module per family of entry points, each with its table
``ENTRY_POINTS``: ``fuzz_functional.py`` (rnn_forward, rnn_backward, rnn_step), ``fuzz_nn.py``
(RNN, RNN.step, RNNCell), ``fuzz_train.py`` (losses, optimizers), ``fuzz_models.py`` (model
files); what they share (cases, judging, bad values) is ``fuzz_common.py``. Adding an entry
point: write a strategy that draws ``Case`` objects in its family's module (for functions of
arrays with named dimensions, an ``ArrayFunction`` spec and ``array_function_cases`` do it all)
and add one line to that module's ``ENTRY_POINTS``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import fuzz_functional
import fuzz_models
import fuzz_nn
import fuzz_train
from fuzz_common import Case, EntryPoint, run_case
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ENTRY_POINTS: dict[str, EntryPoint] = {
    **fuzz_functional.ENTRY_POINTS,
    **fuzz_nn.ENTRY_POINTS,
    **fuzz_train.ENTRY_POINTS,
    **fuzz_models.ENTRY_POINTS,
}
"""Every fuzzed entry point. CI runs each one's ``ci_cases``; their sum is at least 2,000."""

SWEEP_CASES_PER_FAULT = 4
"""Cases with each single fault that a run starts with, before the random faults."""


# ---------------------------------------------------------------------------------------------
# The child process


def run_entry_point(name: str, cases: int, seed_value: int, last_case: Path | None) -> Counter:
    """Run ``cases`` Hypothesis examples of one entry point; return the outcome counts.

    First a sweep: :data:`SWEEP_CASES_PER_FAULT` cases with each single fault of the entry
    point's table, so that every kind of fault meets every argument whatever Hypothesis
    favours; then random cases up to ``cases``.
    """
    entry = ENTRY_POINTS[name]
    tally: Counter = Counter()

    def fuzz_with(strategy: st.SearchStrategy[Case], examples: int) -> None:
        @seed(seed_value)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate, Phase.shrink],
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def fuzz(case: Case) -> None:
            if last_case is not None:
                last_case.write_text(case.description)
            tally["cases"] += 1
            run_case(case, tally)

        fuzz()

    sweep = min(SWEEP_CASES_PER_FAULT, cases // (2 * len(entry.targets)))
    for target in entry.targets if sweep else ():
        fuzz_with(entry.cases(target), sweep)
    fuzz_with(entry.cases(None), cases - tally["cases"])
    return tally


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry", required=True, choices=sorted(ENTRY_POINTS))
    parser.add_argument("--cases", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--last-case", type=Path, default=None)
    args = parser.parse_args(argv)
    faulthandler.enable()
    tally = run_entry_point(args.entry, args.cases, args.seed, args.last_case)
    print("FUZZ-RESULT " + json.dumps({"entry": args.entry, **tally}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
