"""Threads: the kernels release the GIL and keep no shared mutable state between calls.

Results are compared bit for bit with single-threaded ones. No timing is asserted here (the
machine may be shared): ``bench/gil_speedup.py`` measures and prints the speed-up of two threads
over two sequential calls.

BLAS pools are capped at one thread with threadpoolctl where it is installed (OpenBLAS's cap is
process-wide); results do not depend on it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import Problem, blas_threads, forward_backward, make_problem, step_product

import rnnfast

pytestmark = pytest.mark.usefixtures("compiled")


def assert_identical(actual: tuple, expected: tuple, what: str) -> None:
    """(h, grads) pairs equal bit for bit."""
    (h_a, g_a), (h_e, g_e) = actual, expected
    np.testing.assert_array_equal(h_a, h_e, err_msg=f"{what}: h")
    for name, a, e in zip(rnnfast.RNNGrads._fields, g_a, g_e, strict=True):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}: {name}")


# (T, B, D, H): steps on the packed-panel product; and on BLAS (B above the panel product's
# batches even with a helper thread: 257).
LARGE = {"panel": (40, 32, 64, 256), "blas": (6, 257, 32, 256)}


@pytest.mark.parametrize("product", list(LARGE))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_same_large_problem_in_two_threads_is_bit_identical(product, dtype):
    p = make_problem(np.random.default_rng(0), *LARGE[product], dtype)
    assert step_product(p.w_hh, p.x.shape[1]) == product
    with blas_threads(1):
        expected = forward_backward(p, "tanh", "cython")
        barrier = threading.Barrier(2)

        def worker(_: int):
            barrier.wait(timeout=60)  # both threads enter the kernels together
            return [forward_backward(p, "tanh", "cython") for _ in range(3)]

        with ThreadPoolExecutor(max_workers=2) as pool:
            rounds = list(pool.map(worker, range(2)))
    for thread, results in enumerate(rounds):
        for i, result in enumerate(results):
            assert_identical(result, expected, f"thread {thread}, call {i}")


def test_shared_read_only_weights_from_four_threads():
    """4 threads x 20 calls, each with its own inputs, on one set of read-only weights: every
    result equals the sequential one. Sizes and nonlinearities vary between calls so that
    the small-product and BLAS forms of the recurrent product run at the same time."""
    H, D = 16, 12
    rng = np.random.default_rng(1)
    shared = make_problem(rng, 1, 1, D, H, np.float64)
    for w in (shared.w_ih, shared.w_hh, shared.b):
        w.flags.writeable = False
    weights_before = [w.copy() for w in (shared.w_ih, shared.w_hh, shared.b)]
    # B = 1: the small product; B = 257: above the small and panel products' batches, BLAS.
    assert [step_product(shared.w_hh, B) for B in (1, 257)] == ["small", "blas"]

    def job(thread: int, call: int):
        B = 1 if call % 2 else 257
        own = make_problem(np.random.default_rng(1000 * thread + call), 7, B, D, H)
        p = Problem(own.x, own.h0, shared.w_ih, shared.w_hh, shared.b, own.dh)
        return forward_backward(p, "relu" if thread % 2 else "tanh", "cython")

    jobs = [(thread, call) for thread in range(4) for call in range(20)]
    with blas_threads(1):
        expected = {j: job(*j) for j in jobs}
        barrier = threading.Barrier(4)

        def worker(thread: int):
            barrier.wait(timeout=60)
            return {(thread, call): job(thread, call) for call in range(20)}

        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = {k: v for part in pool.map(worker, range(4)) for k, v in part.items()}
    assert threaded.keys() == expected.keys()
    for j in jobs:
        assert_identical(threaded[j], expected[j], f"thread {j[0]}, call {j[1]}")
    for before, w in zip(weights_before, (shared.w_ih, shared.w_hh, shared.b), strict=True):
        np.testing.assert_array_equal(w, before)


@pytest.mark.parametrize("B", [1, 64], ids=["gil_held", "gil_released"])
def test_streaming_steps_on_shared_weights_from_four_threads(B):
    """functional.rnn_step from 4 threads x 50 steps, each thread its own input and state, one
    set of read-only weights: the same states as stepping sequentially. B = 64 makes each step
    large enough (B * H * (D + H) multiply-adds) that the compiled step releases the GIL."""
    D, H, L = 16, 48, 2
    rng = np.random.default_rng(2)
    params = tuple(
        (
            rng.standard_normal((H, D if k == 0 else H)) / 4,
            rng.standard_normal((H, H)) / H,
            rng.standard_normal(H),
            rng.standard_normal(H),
        )
        for k in range(L)
    )
    for layer in params:
        for w in layer:
            w.flags.writeable = False

    def stream(thread: int) -> list[np.ndarray]:
        xs = np.random.default_rng(100 + thread).standard_normal((50, B, D))
        h, states = None, []
        for x in xs:
            _, h = rnnfast.functional.rnn_step(x, h, params, backend="cython")
            states.append(h)
        return states

    with blas_threads(1):
        expected = [stream(t) for t in range(4)]
        barrier = threading.Barrier(4)

        def worker(thread: int) -> list[np.ndarray]:
            barrier.wait(timeout=60)
            return stream(thread)

        with ThreadPoolExecutor(max_workers=4) as pool:
            threaded = list(pool.map(worker, range(4)))
    for thread in range(4):
        for step, (a, e) in enumerate(zip(threaded[thread], expected[thread], strict=True)):
            np.testing.assert_array_equal(a, e, err_msg=f"thread {thread}, step {step}")


def main_thread_progress(work: Callable[[], object]) -> int:
    """How many times the main thread gets to run while ``work`` runs in another thread.

    The switch interval is made so long that a thread holding the GIL is never made to give
    it up, and the main thread gives it up at every iteration (``time.sleep(0)``): so the
    main thread runs during ``work`` only while ``work`` has released the GIL. No timing.
    """
    started, done = threading.Event(), threading.Event()

    def run() -> None:
        started.set()
        work()
        done.set()

    previous = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        worker = threading.Thread(target=run)
        worker.start()
        started.wait()
        progress = 0
        while not done.is_set():
            progress += 1
            time.sleep(0)  # releases the GIL, so the worker can take it back at once
        worker.join()
    finally:
        sys.setswitchinterval(previous)
    return progress


def hold_the_gil() -> None:
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        pass


def test_gil_probe_sees_a_thread_that_holds_the_gil():
    """The control of the test below: pure Python work lets the main thread run 0 times."""
    assert main_thread_progress(hold_the_gil) == 0


@pytest.mark.parametrize("which", ["forward_backward", "forward", "rnn_step"])
def test_kernels_release_the_gil(which):
    """While the compiled kernels run in a worker thread, the main thread runs. The forward is
    checked alone too: a forward that held the GIL hid behind the backward's release."""
    if which == "forward_backward":
        p = make_problem(np.random.default_rng(3), *LARGE["panel"], np.float64)

        def work() -> None:
            for _ in range(3):
                forward_backward(p, "tanh", "cython")

    elif which == "forward":
        p = make_problem(np.random.default_rng(3), 400, 32, 64, 256, np.float64)

        def work() -> None:
            for _ in range(3):
                p.forward("tanh", "cython")

    else:
        B, D, H = 64, 64, 256  # B * H * (D + H) multiply-adds: above the step's GIL threshold
        rng = np.random.default_rng(4)
        params = ((rng.standard_normal((H, D)), rng.standard_normal((H, H)) / H, None, None),)
        x = rng.standard_normal((B, D))

        def work() -> None:
            h = None
            for _ in range(300):
                _, h = rnnfast.functional.rnn_step(x, h, params, backend="cython")

    with blas_threads(1):
        progress = main_thread_progress(work)
    assert progress > 0, "the main thread never ran: the GIL was held throughout"


def test_thread_count_reads_the_outside_setting_while_a_call_holds_blas_at_one():
    """While a call in another thread holds BLAS at one thread (a serial section, which is
    process-wide in OpenBLAS), get_num_threads() still reports the count set from outside,
    the one that call restores."""
    before = rnnfast.get_num_threads()
    p = make_problem(np.random.default_rng(4), 200, 64, 64, 256, np.float32)
    seen = []
    done = threading.Event()

    def calls():
        try:
            for _ in range(5):
                forward_backward(p, "tanh", "cython")
        finally:
            done.set()

    worker = threading.Thread(target=calls)
    worker.start()
    while not done.is_set():
        seen.append(rnnfast.get_num_threads())
        time.sleep(0.0005)
    worker.join()
    assert len(seen) > 10
    assert set(seen) == {before}
    assert rnnfast.get_num_threads() == before


# Run in a fresh interpreter: forking this test process (where other tests may have started
# JAX's or BLAS's threads) could deadlock for reasons of theirs.
FORK_SCRIPT = """
import os, sys, time
import numpy as np
from rnnfast import functional
from rnnfast._core import kernels as _kernels

rng = np.random.default_rng(5)
T, B, D, H = 60, 8, 16, 64
x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))
w_ih, w_hh = rng.standard_normal((H, D)) / 4, rng.standard_normal((H, H)) / 8
b, g = rng.standard_normal(H), rng.standard_normal((T, B, H))
_kernels.set_tuning(overlap="on")


def forward_backward():
    h = functional.rnn_forward(x, h0, w_ih, w_hh, b, backend="cython")
    return [h, *functional.rnn_backward(g, x, h0, h, w_ih, w_hh, backend="cython")]


expected = forward_backward()  # the parent's helper thread now waits for the next call
pid = os.fork()
if pid == 0:
    same = all(
        all(np.array_equal(a, e) for a, e in zip(forward_backward(), expected, strict=True))
        for _ in range(3)
    )
    os._exit(0 if same else 3)
deadline = time.monotonic() + 60
while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
if waited[0] == 0:  # hung: do not leave it spinning
    os.kill(pid, 9)
    sys.exit(4)
sys.exit(os.waitstatus_to_exitcode(waited[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
def test_forked_child_gets_a_helper_thread_of_its_own():
    """The helper thread stays between calls; a child forked after a call has no such thread
    (only the forking thread survives a fork) and must start its own, not wait for the
    parent's: its forward + backward, helper forced, must end and match the parent's."""
    env = dict(os.environ)
    if "TSAN_OPTIONS" in env:  # ThreadSanitizer stops a forked child that starts a thread
        env["TSAN_OPTIONS"] += ":die_after_fork=0"
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT], timeout=300, env=env)
    assert done.returncode != 4, "the forked child hung"
    assert done.returncode != 3, "the forked child's results differ from the parent's"
    assert done.returncode == 0


SIGNAL_SCRIPT = """
import glob
import threading
import numpy as np
from rnnfast import functional
from rnnfast._core import kernels as _kernels


def threads_blocking_sigint():
    count = 0
    for status in glob.glob("/proc/self/task/*/status"):
        try:
            with open(status) as f:
                lines = f.readlines()
        except FileNotFoundError:  # a thread that ended meanwhile (a joined one may still be)
            continue
        for line in lines:
            if line.startswith("SigBlk:") and int(line.split()[1], 16) & 2:  # SIGINT: bit 1
                count += 1
    return count


rng = np.random.default_rng(0)
x, w_ih = rng.standard_normal((60, 8, 16)), rng.standard_normal((64, 16))
w_hh = rng.standard_normal((64, 64)) / 8
# A thread started and joined first: ThreadSanitizer starts a background thread of its own,
# which blocks signals, at the process's first thread start.
started = threading.Thread(target=lambda: None)
started.start()
started.join()
before = threads_blocking_sigint()
_kernels.set_tuning(overlap="on")
functional.rnn_forward(x, None, w_ih, w_hh, None, backend="cython")
print(before, threads_blocking_sigint())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/task")
def test_kept_helper_thread_blocks_asynchronous_signals():
    """The helper thread that stays between calls must not take Ctrl-C (SIGINT) or other
    process-wide signals from the interpreter's threads: a fresh process gains one thread
    blocking SIGINT after its first call with the helper."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_SCRIPT], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert after == before + 1


# The kernels' single-threaded section, helper thread and BLAS count under concurrent callers,
# fork and exit: each in a fresh interpreter (this process's BLAS is capped for the tests).
SETTING_SCRIPT = """
import threading
import numpy as np
import rnnfast
from rnnfast import _threads, functional
from rnnfast._core import kernels

if _threads.get_num_threads() is None:
    raise SystemExit(5)  # no OpenBLAS found: nothing to test
rnnfast.set_num_threads(2)
kernels.set_tuning(overlap="on")
rng = np.random.default_rng(3)
T, B, D, H = 100, 8, 64, 128
x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))
w_ih, w_hh = rng.standard_normal((H, D)) / 8, rng.standard_normal((H, H)) / 12
b, g = rng.standard_normal(H), rng.standard_normal((T, B, H))
stop = threading.Event()


def work():
    while not stop.is_set():
        h = functional.rnn_forward(x, h0, w_ih, w_hh, b, backend="cython")
        functional.rnn_backward(g, x, h0, h, w_ih, w_hh, backend="cython")


workers = [threading.Thread(target=work) for _ in range(2)]
for w in workers:
    w.start()
for i in range(401):  # the last sets 1
    rnnfast.set_num_threads(1 if i % 2 == 0 else 2)
    if i % 50 == 0:
        stop.wait(0.01)
stop.wait(0.2)  # the workers' calls enter and leave the serial section, set to 1 from outside
stop.set()
for w in workers:
    w.join()
outside, blas = rnnfast.get_num_threads(), int(_threads._blas_get())
raise SystemExit(0 if (outside, blas) == (1, 1) else 10 * outside + blas)
"""


def run_script(
    script: str, timeout: float, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "RNNFAST_"))}
    env.update(extra_env or {})
    return subprocess.run(
        [sys.executable, "-c", script], timeout=timeout, env=env, capture_output=True, text=True
    )


def test_set_num_threads_wins_over_calls_running_in_other_threads():
    """set_num_threads(1) while other threads' calls hold BLAS at one: when the last leaves,
    it restores the user's 1, not the 2 it saved on entry."""
    done = run_script(SETTING_SCRIPT, 300)
    if done.returncode == 5:
        pytest.skip("SciPy's OpenBLAS not found")
    assert done.returncode == 0, f"(outside, BLAS) counts x10+: {done.returncode}\n{done.stderr}"


# Children forked at random moments while other threads run kernels (with the helper thread,
# or with BLAS-step calls): each does multi-threaded work (NumPy's 512 x 512 product, the
# kernels, SciPy's BLAS) and must end; a hung one is killed and counted. The parent must not
# deadlock either: OpenBLAS's own fork handler stops its workers, which hangs if one is still
# running another thread's product; the kernels' fork handler lets their products in flight end
# first (threads.h, the BLAS gate). A product of another library running at the fork is
# upstream's limit: docs/guide/threads.md.
FORK_AT_RANDOM_SCRIPT = """
import os, sys, threading, time
import numpy as np
import rnnfast
from rnnfast import functional
from rnnfast._core import kernels

rnnfast.set_num_threads(2)
if os.environ.get("OVERLAP"):
    kernels.set_tuning(overlap=os.environ["OVERLAP"])
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
T, B, D, H = map(int, os.environ.get("SIZE", "100,8,64,128").split(","))
x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))
w_ih, w_hh = rng.standard_normal((H, D)) / 8, rng.standard_normal((H, H)) / 12
b, g = rng.standard_normal(H), rng.standard_normal((T, B, H))


def fb():
    h = functional.rnn_forward(x, h0, w_ih, w_hh, b, backend="cython")
    return functional.rnn_backward(g, x, h0, h, w_ih, w_hh, backend="cython")


stop = threading.Event()


def work():
    while not stop.is_set():
        fb()


workers = [threading.Thread(target=work, daemon=True) for _ in range(int(os.environ["WORKERS"]))]
for w in workers:
    w.start()
hung = 0
for i in range(int(os.environ.get("FORKS", "12"))):
    time.sleep(float(rng.uniform(0, 0.05)))
    pid = os.fork()
    if pid == 0:
        big = np.random.default_rng(1).standard_normal((512, 512))
        fb()
        big @ big
        import scipy.linalg.blas as sb
        sb.dgemm(1.0, big, big)
        fb()
        os._exit(0)
    # a hang is forever; a slow child (a loaded machine) ends within this
    deadline = time.monotonic() + 90
    while (w := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    if w[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        hung += 1
    elif os.waitstatus_to_exitcode(w[1]) != 0:
        hung += 100
stop.set()
for w in workers:
    w.join()
print("hung", hung)
sys.exit(min(hung, 99))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX")
@pytest.mark.parametrize(
    ("size", "workers", "overlap"),
    [("100,8,64,128", 1, "on"), ("100,8,64,128", 2, ""), ("10,300,64,600", 2, "")],
    ids=["helper", "two-callers", "blas-steps"],
)
def test_children_forked_while_kernels_run_never_hang(size, workers, overlap):
    env = {"SIZE": size, "WORKERS": str(workers), "OVERLAP": overlap}
    try:
        done = run_script(FORK_AT_RANDOM_SCRIPT, 900, env)
    except subprocess.TimeoutExpired:
        pytest.fail("the parent hung (in a fork handler)")
    assert done.returncode == 0, f"{done.stdout}{done.stderr[-2000:]}"


EXIT_SCRIPT = """
import sys, threading, time
import numpy as np
import rnnfast
from rnnfast import functional

rnnfast.set_num_threads(2)
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
T, B, D, H = 30, 300, 64, 600
x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))
w_ih, w_hh = rng.standard_normal((H, D)) / 8, rng.standard_normal((H, H)) / 30
b = rng.standard_normal(H)


def work():
    while True:
        functional.rnn_forward(x, h0, w_ih, w_hh, b, backend="cython")


for _ in range(2):
    threading.Thread(target=work, daemon=True).start()
time.sleep(float(rng.uniform(0.05, 0.5)))
"""


@pytest.mark.parametrize("seed", range(6))
def test_a_process_exits_while_daemon_threads_run_kernels(seed):
    """Exit while two daemon threads are inside BLAS-step calls: the process must end.
    OpenBLAS's destructor stops its workers by a mark in their queue that a worker still
    running a daemon thread's product overwrites, and then waits for it forever; the kernels'
    exit handler closes their BLAS gate and lets their calls in flight end first (threads.h).
    Before that, seed 0 hung about every other run."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, str(seed)], timeout=60, capture_output=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the process hung at exit")
    assert done.returncode == 0, done.stderr[-2000:]


# ---- issue 24: shared machines ---------------------------------------------------------------
# Each in a fresh interpreter with BLAS at two threads (this process caps it for the tests).
HELPER_SETUP = """
import os, sys, threading, time
import numpy as np
import rnnfast
from rnnfast import _backend, functional
from rnnfast._core import kernels

if rnnfast.get_num_threads() is None or rnnfast.available_cpus() < 2:
    raise SystemExit(5)  # no OpenBLAS found, or one CPU: nothing to test
rnnfast.set_num_threads(2)


def problem(T, B, D, H, seed=3):
    rng = np.random.default_rng(seed)
    x, h0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))
    w_ih, w_hh = rng.standard_normal((H, D)) / 8, rng.standard_normal((H, H)) / 12
    b, g = rng.standard_normal(H), rng.standard_normal((T, B, H))

    def fb():
        h = functional.rnn_forward(x, h0, w_ih, w_hh, b, backend="cython")
        return [h, *functional.rnn_backward(g, x, h0, h, w_ih, w_hh, backend="cython")]

    return fb


def same(a, b):
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
"""

SECOND_CALL_SCRIPT = (
    HELPER_SETUP
    + """
small = problem(100, 8, 64, 128)  # overlaps: a helper when alone
_backend.reset_thread_stats()
small()
alone = kernels.thread_stats()["helpers_started"]
long_call = problem(4000, 8, 64, 128, seed=4)
for attempt in range(20):
    worker = threading.Thread(target=long_call)
    worker.start()
    while kernels.thread_stats()["calls_in_flight"] == 0:
        time.sleep(0.0002)
    time.sleep(0.002)
    before = kernels.thread_stats()
    small()
    after = kernels.thread_stats()
    worker.join()
    if after["calls_in_flight"] >= 1:  # the long call was in flight throughout
        break
else:
    raise SystemExit(6)
started = after["helpers_started"] - before["helpers_started"]
declined = after["helpers_declined"] - before["helpers_declined"]
print(alone, started, declined)
# (alone: 2, or 1 if the machine is so busy that the forward's helper was late and the
# backward ran alone by the back-off)
raise SystemExit(0 if alone >= 1 and started == 0 and declined >= 2 else 1)
"""
)


def run_or_skip(script: str, timeout: float = 300) -> subprocess.CompletedProcess:
    done = run_script(script, timeout)
    if done.returncode == 5:
        pytest.skip("SciPy's OpenBLAS not found, or fewer than two CPUs")
    return done


def test_a_second_concurrent_call_starts_no_helper():
    """A call alone starts the helper (forward and backward); while another call is in
    flight (another Python thread), the cores are taken by the callers: it starts none and
    runs both passes alone."""
    done = run_or_skip(SECOND_CALL_SCRIPT)
    assert done.returncode != 6, "the long call never overlapped the short one"
    assert done.returncode == 0, f"(alone, started, declined): {done.stdout}{done.stderr}"


STEP_ASIDE_SCRIPT = (
    HELPER_SETUP
    + """
kernels.set_tuning(overlap="on")
second = problem(1000, 8, 64, 128)  # long enough to meet a round or chunk boundary
# forward: the split (both threads share every step's panels); backward: weight gradients
long_call = problem(3000, 8, 64, 512, seed=4)
expected = long_call()
phases = {1: "forward", 2: "backward"}
hit, bad = set(), []
for attempt in range(40):
    phase = 1 + attempt % 2
    time.sleep(0.05)  # past the hold of the last attempt's overlap
    _backend.reset_thread_stats()
    out = [None]
    worker = threading.Thread(target=lambda: out.__setitem__(0, long_call()))
    worker.start()
    while kernels.thread_stats()["helpers_started"] < phase and worker.is_alive():
        time.sleep(0.0002)
    time.sleep(0.002)
    before = kernels.thread_stats()
    second()  # a second call comes in: the long call's helper steps aside
    worker.join()
    if not same(out[0], expected):
        bad.append(phases[phase])
    # (the second call's hold keeps a backward that starts after it from taking a helper: a
    # helper that stepped aside was the phase's)
    in_phase = before["helpers_started"] == phase and before["calls_in_flight"] == 1
    if in_phase and kernels.thread_stats()["helpers_stepped_aside"] > 0:
        hit.add(phase)
    if hit == {1, 2} and attempt >= 3:
        break
print(sorted(hit), bad)
raise SystemExit(0 if hit == {1, 2} and not bad else 1)
"""
)


def test_a_helper_steps_aside_when_a_second_call_comes_in():
    """A call that has its helper when another call comes in (another Python thread) drops to
    one thread at its next chunk boundary, in the split forward and in the backward: its
    caller takes the chunks the helper left, and the results keep their bits."""
    done = run_or_skip(STEP_ASIDE_SCRIPT, 600)
    report = f"(phases stepped aside, phases whose bits changed): {done.stdout}"
    assert done.returncode == 0, report + done.stderr[-2000:]


HOLD_SCRIPT = (
    HELPER_SETUP
    + """
from rnnfast import _threads
rng = np.random.default_rng(4)
x, w_ih = rng.standard_normal((3000, 16, 64)), rng.standard_normal((128, 64)) / 8
w_hh = rng.standard_normal((128, 128)) / 12


def long_call():  # a forward: alone and without a helper, BLAS at two threads throughout
    functional.rnn_forward(x, None, w_ih, w_hh, None, backend="cython")


pair = [problem(100, 8, 64, 128, seed=s) for s in (5, 6)]


def blas_counts_during(fn):
    # the BLAS thread counts seen from here while fn runs in another thread
    seen, worker = set(), threading.Thread(target=fn)
    worker.start()
    while worker.is_alive():
        seen.add(int(_threads._blas_get()))
        time.sleep(0.0002)
    worker.join()
    return seen


hits = alone_at_one = 0
for attempt in range(40):
    time.sleep(0.05)  # past any hold
    kernels.set_tuning(overlap="off")  # long_call: no helper
    alone = blas_counts_during(long_call)
    alone_at_one += 1 in alone
    kernels.set_tuning(overlap="auto")
    _backend.reset_thread_stats()
    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=lambda f=f: (barrier.wait(), f())) for f in pair]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # a declined helper: the pair was in flight at once (or the hold of their own began)
    overlapped = kernels.thread_stats()["helpers_declined"] > 0
    kernels.set_tuning(overlap="off")
    held = blas_counts_during(long_call)  # it starts within 20 ms: held at one
    hits += overlapped and 1 in held
    if hits >= 2:
        break
print(hits, alone_at_one, int(_threads._blas_get()))
raise SystemExit(0 if (hits, alone_at_one, int(_threads._blas_get())) == (2, 0, 2) else 1)
"""
)


def test_a_call_alone_right_after_two_calls_keeps_blas_at_one_thread():
    """For 20 ms after two calls were in flight at once, a call alone keeps BLAS at one
    thread (where alone it would use two), and the count is back to two after it."""
    done = run_or_skip(HOLD_SCRIPT, 600)
    report = f"(held calls, calls alone seen at one thread, BLAS after): {done.stdout}"
    assert done.returncode == 0, report + done.stderr


SCENARIO_SCRIPT = (
    HELPER_SETUP
    + """
import subprocess
sizes = [(100, 8, 64, 128), (100, 32, 128, 256), (20, 64, 512, 512)]
bad = []
for size in sizes:
    fb = problem(*size)
    _backend.reset_thread_stats()
    expected = fb()
    results = {}

    def callers(n):
        out = [None] * n

        def run(i):
            out[i] = [fb() for _ in range(3)]

        threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [r for rs in out for r in rs]

    results["two callers"] = callers(2)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        results["a busy core"] = [fb() for _ in range(6)]
        results["two callers, a busy core"] = callers(2)
    finally:
        busy.kill()
        busy.wait()
    import torch
    a = torch.randn(256, 256)
    results["between torch calls"] = [(a @ a, fb())[1] for _ in range(3)]
    for name, rs in results.items():
        if not all(same(r, expected) for r in rs):
            bad.append(f"{size} {name}")
print(bad, kernels.thread_stats())
raise SystemExit(1 if bad else 0)
"""
)


def test_results_are_bit_identical_under_every_scenario():
    """Default settings: alone, two concurrent callers (the second without a helper), beside
    a process keeping one core busy (late helpers, back-off, cancelled helpers), between
    PyTorch calls: the same bits, whichever thread ran which chunk."""
    pytest.importorskip("torch")
    done = run_or_skip(SCENARIO_SCRIPT, 600)
    assert done.returncode == 0, f"{done.stdout}{done.stderr[-2000:]}"


LIMITS_SCRIPT = (
    HELPER_SETUP
    + """
import threadpoolctl
fb = problem(100, 8, 64, 128)
_backend.reset_thread_stats()
with threadpoolctl.threadpool_limits(limits=1):
    inside = rnnfast.get_num_threads()
    for _ in range(3):
        fb()
    capped = kernels.thread_stats()["helpers_started"]
rnnfast.set_num_threads(1)
for _ in range(3):
    fb()
capped += kernels.thread_stats()["helpers_started"]
# A limit set with threadpoolctl while other threads' calls hold BLAS at one (two callers:
# shared sections) is the count they restore, not the 1 they saved.
stop = threading.Event()


def work():
    while not stop.is_set():
        fb()


workers = [threading.Thread(target=work) for _ in range(2)]
for w in workers:
    w.start()
time.sleep(0.05)
for _ in range(20):
    threadpoolctl.threadpool_limits(limits=2)
    time.sleep(0.005)
stop.set()
for w in workers:
    w.join()
from rnnfast import _threads
print(inside, capped, rnnfast.get_num_threads(), int(_threads._blas_get()))
raise SystemExit(0 if (inside, capped, int(_threads._blas_get())) == (1, 0, 2) else 1)
"""
)


def test_set_num_threads_and_threadpoolctl_limits_win():
    """Under threadpoolctl's limit of one thread, or set_num_threads(1), no call starts a
    helper; a threadpoolctl limit set while other threads' calls hold BLAS at one is what
    they restore when they leave."""
    pytest.importorskip("threadpoolctl")
    done = run_or_skip(LIMITS_SCRIPT)
    assert done.returncode == 0, f"(inside, helpers, outside, BLAS): {done.stdout}{done.stderr}"


AFFINITY_SCRIPT = """
import os, warnings
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
import numpy as np
import rnnfast
from rnnfast import functional
from rnnfast._core import kernels

kernels.set_tuning(overlap="on")
rng = np.random.default_rng(0)
x, w_ih = rng.standard_normal((60, 8, 16)), rng.standard_normal((64, 16))
w_hh = rng.standard_normal((64, 64)) / 8
functional.rnn_forward(x, None, w_ih, w_hh, None, backend="cython")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    rnnfast.set_num_threads(2)
    rnnfast.set_num_threads(3)
warned = len([w for w in caught if "available" in str(w.message)])
helpers = kernels.thread_stats()["helpers_started"]
print(rnnfast.available_cpus(), rnnfast.get_num_threads(), helpers, warned)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_restricted_cpus_are_detected():
    """An affinity mask of one CPU: one CPU available, BLAS at one thread, no helper even when
    forced, and set_num_threads above it warns once and is capped."""
    done = run_script(AFFINITY_SCRIPT, 300)
    assert done.returncode == 0, done.stderr
    cpus, blas, helpers, warned = map(int, done.stdout.split())
    assert cpus == 1 and helpers == 0 and warned == 1
    assert blas in (1, 0) or rnnfast.get_num_threads() is None


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "50000\n"}, 2),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_quota_is_read(tmp_path, files, expected):
    """A container's --cpus (cgroup v2 cpu.max, v1 cfs quota over period), rounded up."""
    from rnnfast import _threads

    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert _threads._cgroup_cpu_limit(str(tmp_path)) == expected
