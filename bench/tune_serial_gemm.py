"""Choose SERIAL_STEP_MAX_MACS and SERIAL_GEMM_MAX_MACS: below them GEMMs use one BLAS thread.

Times forward + backward (rnnfast.benchmarks cases), sweeping one threshold with the other at
its default, against the hoisted NumPy loop, median of repeats; run it on an idle machine.

    python bench/tune_serial_gemm.py [--repeats 9]
"""

import argparse

from rnnfast import _kernels, benchmarks

CASES = [
    benchmarks.Case(100, 8, 64, 128),
    benchmarks.Case(100, 32, 128, 256),
    benchmarks.Case(50, 64, 512, 512),
    benchmarks.Case(100, 32, 128, 256, "float64"),
]
THRESHOLDS = [1 << 24, 1 << 20, 1 << 18, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    try:
        for case in CASES:
            run = benchmarks.make_runner("rnnfast", case)
            for which in ("serial_step_max_macs", "serial_gemm_max_macs"):
                for threshold in THRESHOLDS:
                    _kernels._set_tuning(**{which: threshold})
                    ms = benchmarks.time_median(run, args.repeats)
                    print(f"{case.label} {case.dtype}: {which} {threshold:>9}: {ms:8.2f} ms")
                _kernels._set_tuning(**{which: getattr(_kernels, which.upper())})
            numpy_ms = benchmarks.time_median(benchmarks.make_runner("numpy", case), args.repeats)
            print(f"{case.label} {case.dtype}: hoisted NumPy loop: {numpy_ms:8.2f} ms")
    finally:
        _kernels._set_tuning(
            serial_step_max_macs=_kernels.SERIAL_STEP_MAX_MACS,
            serial_gemm_max_macs=_kernels.SERIAL_GEMM_MAX_MACS,
        )


if __name__ == "__main__":
    main()
