"""Run one case's forward (or forward + backward) in a loop, for a profiler to sample.

    perf record -o case.data python bench/profile_case.py 100,8,64,128 [--forward] [--seconds 8]
    perf report -i case.data --no-children --sort comm,dso,sym
    perf report -i case.data --no-children --sort pid,sym    # per thread: caller and helper

Prints the mean time per call at the end (the profiler's overhead included).
"""

import argparse
import time

import harness as benchmarks


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", help="T,B,D,H")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--forward", action="store_true", help="the forward pass only")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    T, B, D, H = map(int, args.size.split(","))
    case = benchmarks.Case(T, B, D, H, args.dtype)
    if args.forward:
        call = benchmarks.forward_runners(case, ["rnnfast"])["rnnfast"]
    else:
        call = benchmarks.make_runner("rnnfast", case)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        call()
        calls += 1
    print(f"{(time.perf_counter() - start) / calls * 1e3:.3f} ms per call ({calls} calls)")


if __name__ == "__main__":
    main()
