#!/usr/bin/env bash
# Manual check, too slow for every CI run: the compiled extension under a debug build and under
# AddressSanitizer and ThreadSanitizer (and, if valgrind is installed, a small run under
# valgrind memcheck).
#
#   bash .ci/debug-and-sanitize.sh            # all four steps
#   bash .ci/debug-and-sanitize.sh debug      # or any of: debug asan tsan valgrind
#
# Each step copies the working tree (tracked and untracked, not ignored files) into a scratch
# directory and builds there, in its own virtual environment, so nothing is written into the
# checkout (no generated .c, no build/ objects that a normal build could pick up).
#
#   debug     RNNFAST_DEBUG=1: Cython bounds, wraparound and initialization checks on, -O0 -g.
#             Runs the whole test suite (fuzz included) against that build.
#   asan      -fsanitize=address build; Python runs with libasan preloaded and
#             PYTHONMALLOC=malloc so that Python's own allocations are checked too. Runs the
#             compiled subset: parity, validation, reliability, threads and a fifth of the fuzz.
#             Leak detection is off (the interpreter frees little at exit by design), and an
#             impossible allocation returns NULL (NumPy's MemoryError, as tested) instead of aborting.
#   tsan      -fsanitize=thread build, libtsan preloaded: the tests that run threads (the
#             overlap's helper thread forced on, Python threads in the kernels at once).
#             Only rnnfast's extension is instrumented, so its own accesses are checked
#             against each other and against the threads' synchronization. OpenBLAS runs on
#             one thread here: its pool synchronizes by spinning on plain variables, which
#             ThreadSanitizer cannot see, so its workers' memset of a GEMM's output shows as a
#             race with whoever reads it next (seen once); the overlap tests force the helper.
#   valgrind  memcheck on a short script of forward/backward calls (valgrind is ~50x slower).
#
# Set RNNFAST_SANITIZE_DIR to keep the scratch directory; it is deleted otherwise. Set
# RNNFAST_SANITIZE_TREE=HEAD to check the last commit instead of the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
steps=("${@:-debug asan tsan valgrind}")
read -r -a steps <<<"${steps[*]}"

scratch="${RNNFAST_SANITIZE_DIR:-$(mktemp -d)}"
if [[ -z "${RNNFAST_SANITIZE_DIR:-}" ]]; then
    trap 'rm -rf "$scratch"' EXIT
fi
# The build requirements (the build runs without isolation, to take CFLAGS and the debug
# switch); the test requirements come from the project's own [test] extra.
deps=(numpy scipy "Cython>=3.0.10" setuptools wheel)

# make_env NAME: a venv at $scratch/NAME with the build and test dependencies, and a copy of
# the working tree at $scratch/NAME-src.
make_env() {
    local name=$1
    python3 -m venv "$scratch/$name"
    "$scratch/$name/bin/python" -m pip install -q "${deps[@]}"
    rm -rf "$scratch/$name-src"
    mkdir -p "$scratch/$name-src"
    if [[ "${RNNFAST_SANITIZE_TREE:-}" == HEAD ]]; then
        git -C "$repo" archive --format=tar HEAD | tar -xf - -C "$scratch/$name-src"
    else
        git -C "$repo" ls-files -co --exclude-standard -z \
            | (cd "$repo" && tar --null -cf - -T -) | tar -xf - -C "$scratch/$name-src"
    fi
}

run_debug() {
    echo "== debug build (RNNFAST_DEBUG=1) and the whole test suite"
    make_env debug
    (cd "$scratch/debug-src" && RNNFAST_DEBUG=1 "$scratch/debug/bin/python" -m pip install -q \
        --no-build-isolation ".[test]")
    (cd "$scratch/debug-src" && "$scratch/debug/bin/python" -m pytest -q -p no:cacheprovider)
}

run_asan() {
    echo "== AddressSanitizer build and the compiled subset"
    make_env asan
    local libasan
    libasan=$(gcc -print-file-name=libasan.so)
    (cd "$scratch/asan-src" \
        && CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" \
            LDFLAGS="-fsanitize=address" \
            "$scratch/asan/bin/python" -m pip install -q --no-build-isolation ".[test]")
    (cd "$scratch/asan-src" \
        && LD_PRELOAD="$libasan" PYTHONMALLOC=malloc \
            ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1" \
            RNNFAST_FUZZ_SCALE=0.2 \
            "$scratch/asan/bin/python" -m pytest -q -p no:cacheprovider \
            tests/test_parity.py tests/test_validation.py tests/test_reliability.py \
            tests/test_threads.py tests/test_compiled.py tests/test_fuzz.py)
}

run_tsan() {
    echo "== ThreadSanitizer build and the tests that run threads"
    make_env tsan
    local libtsan
    libtsan=$(gcc -print-file-name=libtsan.so)
    (cd "$scratch/tsan-src" \
        && CFLAGS="-fsanitize=thread -g" LDFLAGS="-fsanitize=thread" \
            "$scratch/tsan/bin/python" -m pip install -q --no-build-isolation ".[test]")
    (cd "$scratch/tsan-src" \
        && LD_PRELOAD="$libtsan" TSAN_OPTIONS="halt_on_error=1:report_signal_unsafe=0" \
            OPENBLAS_NUM_THREADS=1 \
            "$scratch/tsan/bin/python" -m pytest -q -s -p no:cacheprovider \
            -k "overlap or thread" tests/test_parity.py tests/test_threads.py tests/test_compiled.py)
}

run_valgrind() {
    if ! command -v valgrind >/dev/null; then
        echo "== valgrind not installed: skipped"
        return
    fi
    echo "== valgrind memcheck on a short script"
    make_env valgrind
    (cd "$scratch/valgrind-src" && "$scratch/valgrind/bin/python" -m pip install -q \
        --no-build-isolation .)
    # Only errors whose stack passes through rnnfast's own extension count.
    (cd "$scratch" && PYTHONMALLOC=malloc OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
        valgrind --tool=memcheck --error-exitcode=99 --track-origins=yes \
        --errors-for-leak-kinds=none \
        --log-file="$scratch/valgrind.log" \
        "$scratch/valgrind/bin/python" "$repo/.ci/wheel-smoke.py" --quick) || {
        status=$?
        grep -B2 -A25 "_core/kernels\|_core/blas\|rnnfast/_core" "$scratch/valgrind.log" | head -200 || true
        echo "valgrind exited $status; full log: $scratch/valgrind.log"
        if grep -q "_core/kernels\|_core/blas\|rnnfast/_core" "$scratch/valgrind.log"; then
            return 1
        fi
        echo "(no error involves rnnfast's extension modules)"
    }
    grep "ERROR SUMMARY" "$scratch/valgrind.log"
}

for step in "${steps[@]}"; do
    "run_$step"
done
echo "== done: ${steps[*]}"
