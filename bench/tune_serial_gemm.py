"""Choose SERIAL_STEP_MAX_MACS and SERIAL_GEMM_MAX_MACS: below them GEMMs use one BLAS thread.

Times forward + backward (rnnfast.benchmarks cases), sweeping one threshold with the other at
its default, against the hoisted NumPy loop (benchmarks.time_blocks: the thresholds take
turns in blocks, three rounds, lowest block median). The time-step threshold only concerns
steps that go to BLAS, so its sweep forces every step there (set_tuning(step_product="blas"));
under the measured rule, batches of 4 to 32 run the panel product instead.

    python bench/tune_serial_gemm.py [--repeats 5]
"""

import argparse
import functools

import harness as benchmarks

from rnnfast._core import kernels as _kernels

CASES = [
    benchmarks.Case(100, 8, 64, 128),
    benchmarks.Case(100, 32, 128, 256),
    benchmarks.Case(50, 64, 512, 512),
    benchmarks.Case(100, 32, 128, 256, "float64"),
]
THRESHOLDS = [1 << 26, 1 << 24, 1 << 22, 1 << 20, 1 << 18, 0]
SWEEPS = {"serial_step_max_macs": "blas", "serial_gemm_max_macs": "auto"}  # step product


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        for case in CASES:
            run = benchmarks.make_runner("rnnfast", case)
            for which, product in SWEEPS.items():
                _kernels.set_tuning(step_product=product)
                setup = {
                    t: functools.partial(_kernels.set_tuning, **{which: t}) for t in THRESHOLDS
                }
                ms = benchmarks.time_blocks(
                    dict.fromkeys(THRESHOLDS, run), args.repeats, setup=setup
                )
                for threshold in THRESHOLDS:
                    print(
                        f"{case.label} {case.dtype}: steps on {product}, {which} "
                        f"{threshold:>9}: {ms[threshold]:8.2f} ms"
                    )
                _kernels.set_tuning(**{which: _kernels.DEFAULT_TUNING[which]})
            numpy_ms = benchmarks.time_blocks(
                {"numpy": benchmarks.make_runner("numpy", case)}, args.repeats
            )["numpy"]
            print(f"{case.label} {case.dtype}: hoisted NumPy loop: {numpy_ms:8.2f} ms")
    finally:
        _kernels.set_tuning(
            step_product="auto",
            serial_step_max_macs=_kernels.DEFAULT_TUNING["serial_step_max_macs"],
            serial_gemm_max_macs=_kernels.DEFAULT_TUNING["serial_gemm_max_macs"],
        )


if __name__ == "__main__":
    main()
