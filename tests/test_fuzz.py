"""Fuzz every public entry point in child processes: a crash is a failure, not a lost run.

The cases are drawn by the ``fuzz_*.py`` modules, one per family of entry points, and judged by
``fuzz_common.py``; ``fuzz_harness.py`` gathers them in its table ``ENTRY_POINTS``. Each entry
point runs in its own ``python tests/fuzz_harness.py`` child with faulthandler on. Here the
parent checks that the child exited cleanly, ran every case it was asked for, tried every kind
of fault on every argument, and saw both correct results and errors in healthy proportions.

Environment knobs (for longer runs by hand; CI uses the defaults):
  RNNFAST_FUZZ_SEED   the Hypothesis seed (default 0, so CI is reproducible)
  RNNFAST_FUZZ_SCALE  multiplies every entry point's number of cases (default 1)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_harness import ENTRY_POINTS, SWEEP_CASES_PER_FAULT

# Without the extension every case would compare the reference with itself.
pytestmark = pytest.mark.usefixtures("compiled")

HARNESS = Path(__file__).with_name("fuzz_harness.py")
CI_MINIMUM_CASES = 2000
CHILD_TIMEOUT_S = 600
# Address-space caps of the children that load untrusted input: a case that allocates beyond it
# fails with a MemoryError (only ValueError is allowed) instead of swapping the machine.
MEMORY_CAP_BYTES = {"model files": 3 << 30}


def fuzz_seed() -> int:
    return int(os.environ.get("RNNFAST_FUZZ_SEED", "0"))


def fuzz_cases(entry: str) -> int:
    return int(ENTRY_POINTS[entry].ci_cases * float(os.environ.get("RNNFAST_FUZZ_SCALE", "1")))


def run_child(entry: str, cases: int, seed: int, last_case: Path) -> subprocess.CompletedProcess:
    """Run one entry point's cases in a fresh interpreter, the same one that runs pytest."""
    command = [
        sys.executable,
        "-X",
        "faulthandler",
        "-W",
        "ignore::RuntimeWarning",  # NumPy's overflow warnings on the NaN/Inf cases
        str(HARNESS),
        f"--entry={entry}",
        f"--cases={cases}",
        f"--seed={seed}",
        f"--last-case={last_case}",
    ]
    cap = MEMORY_CAP_BYTES.get(entry)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=False,
        preexec_fn=limit_memory if cap else None,
    )


def test_ci_runs_at_least_2000_cases():
    assert sum(e.ci_cases for e in ENTRY_POINTS.values()) >= CI_MINIMUM_CASES


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_fuzz_entry_point(entry, tmp_path):
    cases, seed = fuzz_cases(entry), fuzz_seed()
    last_case = tmp_path / "last-case.txt"
    child = run_child(entry, cases, seed, last_case)
    tail = "\n".join((child.stdout + child.stderr).splitlines()[-60:])
    reproduce = f"reproduce: python {HARNESS} --entry={entry} --cases={cases} --seed={seed}"
    if child.returncode < 0 or child.returncode > 1:
        crashed_on = last_case.read_text() if last_case.exists() else "(before the first case)"
        pytest.fail(
            f"the fuzz child of {entry} died with exit status {child.returncode} "
            f"(a crash), last case started: {crashed_on}\n{reproduce}\n{tail}"
        )
    assert child.returncode == 0, f"a fuzz case of {entry} failed\n{reproduce}\n{tail}"

    lines = [line for line in child.stdout.splitlines() if line.startswith("FUZZ-RESULT ")]
    assert len(lines) == 1, f"no result line from the child\n{tail}"
    tally = json.loads(lines[0].removeprefix("FUZZ-RESULT "))
    print(f"{entry}: {json.dumps(tally)}")

    outcomes = {k: tally.get(k, 0) for k in ("ok", "ValueError", "TypeError")}
    assert tally["cases"] >= cases, f"only {tally['cases']} of {cases} cases ran"
    assert sum(outcomes.values()) == tally["cases"], f"unaccounted cases: {tally}"
    # Both outcomes must be well represented, or the fuzz tests little.
    errors = outcomes["ValueError"] + outcomes["TypeError"]
    for outcome, count in (("a result", outcomes["ok"]), ("an error", errors)):
        assert count >= cases // 10, f"only {count} cases ended in {outcome}: {tally}"
    if cases >= 2 * SWEEP_CASES_PER_FAULT * len(ENTRY_POINTS[entry].targets):
        for kind, name in ENTRY_POINTS[entry].targets:
            tag = f"single-fault {kind}:{name}"
            assert tally.get(tag, 0) >= SWEEP_CASES_PER_FAULT, f"{tag} was not tried: {tally}"
