"""Compare two outputs of tests/c/simd_harness.c (e.g. x86-64 and aarch64 under qemu).

Usage: python tests/c/compare.py REFERENCE OTHER

Each line is a case's name and its results. The two must hold the same cases, and every value
must agree within a tolerance relative to max(1, |value|): the kernels of two compilers or CPUs
may contract a*b+c into an FMA differently, so the last bits may differ, not more. Exit status
1 on any difference beyond it.
"""

import math
import sys

TOLERANCE = {"f32": 5e-6, "f64": 3e-14}


def read(path: str) -> dict[str, list[float]]:
    cases = {}
    with open(path) as f:
        for line in f:
            fields = line.split()
            values = []
            while fields:
                try:
                    values.append(float(fields[-1]))
                except ValueError:
                    break
                fields.pop()
            cases[" ".join(fields)] = values[::-1]
    return cases


def main(reference_path: str, other_path: str) -> int:
    reference, other = read(reference_path), read(other_path)
    if not reference:
        print(f"{reference_path}: no cases")
        return 1
    bad = 0
    if reference.keys() != other.keys():
        print("different cases:", sorted(reference.keys() ^ other.keys()))
        bad += 1
    worst = {"f32": 0.0, "f64": 0.0}
    for name in reference.keys() & other.keys():
        dtype = "f32" if "_f32" in name else "f64"
        a, b = reference[name], other[name]
        if len(a) != len(b):
            print(f"{name}: {len(a)} values against {len(b)}")
            bad += 1
            continue
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if math.isnan(x) and math.isnan(y):
                continue
            err = abs(x - y) / max(1.0, abs(x))
            if not err <= TOLERANCE[dtype]:
                print(f"{name}[{i}]: {x!r} against {y!r} (relative {err:.3g})")
                bad += 1
                err = math.inf
            worst[dtype] = max(worst[dtype], err)
    print(
        f"{len(reference)} cases, {sum(map(len, reference.values()))} values; largest relative "
        f"difference float32 {worst['f32']:.3g} (tolerance {TOLERANCE['f32']:g}), float64 "
        f"{worst['f64']:.3g} (tolerance {TOLERANCE['f64']:g}): {'FAIL' if bad else 'agree'}"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
