/* Threads: a second thread beside a time loop, the counters the two share, and the sections
 * that hold BLAS at one thread.
 *
 * kernels.pyx runs the sequential recursion on the calling thread and hands the GEMMs that
 * only need finished steps (the input projection ahead of the forward loop, the weight
 * gradients behind the backward loop) to one helper thread, kept between calls. The helper
 * follows a counter of finished steps that the owner publishes (release) and the follower
 * reads (acquire). Without POSIX threads (Windows builds) no helper starts and the caller
 * does the helper's work itself, after its loop.
 */
#ifndef RNNFAST_THREADS_H
#define RNNFAST_THREADS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <time.h>
#define RF_HAVE_THREADS 1
#else
#define RF_HAVE_THREADS 0
#endif

/* One turn of a wait loop: a pause at first (the other side is usually microseconds away),
 * then yield the core, then sleep: a wait never holds a core for long, so that a process
 * confined to one core, or whose other thread was descheduled, still progresses, and a
 * process that exits or forks while a thread waits is not held up. Spins are counted, not
 * timed: about RF_SPIN_PAUSES pauses are some tens of microseconds. */
#define RF_SPIN_PAUSES 2000
#define RF_SPIN_YIELDS 200
static inline void rf_backoff(long spins)
{
    if (spins < RF_SPIN_PAUSES) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    } else if (spins < RF_SPIN_PAUSES + RF_SPIN_YIELDS) {
#if RF_HAVE_THREADS
        sched_yield();
#endif
    } else {
#if RF_HAVE_THREADS
        struct timespec nap = {0, 20000}; /* 20 us: the waker is descheduled; let it run */
        nanosleep(&nap, NULL);
#endif
    }
}

/* Wait until *counter >= value (see rf_backoff). */
static inline void rf_wait_for(ptrdiff_t *counter, ptrdiff_t value)
{
    for (long spins = 0; __atomic_load_n(counter, __ATOMIC_ACQUIRE) < value; spins++)
        rf_backoff(spins);
}

/* ---- what the process lets rnnfast use ---------------------------------------------------
 * rf_available_cpus: the CPUs this process may run on (affinity, cgroup quota), as Python
 * read them (rnnfast._threads); a helper thread starts only if there are two. rf_calls: the
 * kernel calls in flight in the whole process (the engine counts them); a call that finds
 * another in flight starts no helper and keeps BLAS at one thread, since the cores are then
 * already taken by the callers themselves. */
static int rf_available_cpus = 2;
static ptrdiff_t rf_calls = 0;
/* Diagnostics (read by kernels.thread_stats): helpers started, and calls that asked for one
 * and ran alone because another call was in flight or fewer than two CPUs are available. */
static ptrdiff_t rf_helpers_started = 0, rf_helpers_declined = 0;

/* When two calls were last in flight at once: for RF_SHARED_HOLD_NS after, calls start no
 * helper either, so that callers that take turns (two threads, each between its own Python
 * work) do not each take a helper in the gaps and run three threads on two cores. */
#define RF_SHARED_HOLD_NS 20000000
static uint64_t rf_shared_ns = 0;

static inline uint64_t rf_clock_ns(void)
{
#if RF_HAVE_THREADS
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
#else
    return 0;
#endif
}

/* Whether the cores are the callers' now: another call in flight, or two were within the
 * last RF_SHARED_HOLD_NS (never, without a clock: rf_shared_ns stays 0). */
static inline int rf_cores_shared(void)
{
    const uint64_t shared_ns = __atomic_load_n(&rf_shared_ns, __ATOMIC_RELAXED);
    return __atomic_load_n(&rf_calls, __ATOMIC_ACQUIRE) > 1
           || (shared_ns != 0 && rf_clock_ns() - shared_ns < RF_SHARED_HOLD_NS);
}

/* Count a call in; how many calls share the cores: the calls in flight, or 2 while the hold
 * runs (a call alone between two of another thread's keeps BLAS at one thread too: a second
 * BLAS thread would take the other caller's core, and OpenBLAS's pool spins for about 0.1 s
 * of CPU after each multi-threaded product, see docs/guide/threads.md). */
static inline ptrdiff_t rf_call_enter(void)
{
    const ptrdiff_t n = __atomic_add_fetch(&rf_calls, 1, __ATOMIC_ACQ_REL);
    if (n > 1) __atomic_store_n(&rf_shared_ns, rf_clock_ns(), __ATOMIC_RELAXED);
    else if (rf_cores_shared()) return 2;
    return n;
}

/* A helper steps aside, at its next chunk boundary, once another call is in flight: from then
 * on both calls run one thread each (its caller takes the chunks it leaves). */
static ptrdiff_t rf_helpers_stepped_aside = 0;
/* A forward loop that caught up with its helper projected the next chunk as it waited. */
static ptrdiff_t rf_chunks_projected_ahead = 0;
static inline int rf_crowded(void) { return __atomic_load_n(&rf_calls, __ATOMIC_ACQUIRE) > 1; }

/* Wait until *counter >= value, as rf_wait_for; 0 (at once) if another call comes in first. */
static inline int rf_wait_uncrowded(ptrdiff_t *counter, ptrdiff_t value)
{
    for (long spins = 0; __atomic_load_n(counter, __ATOMIC_ACQUIRE) < value; spins++) {
        if (rf_crowded()) return 0;
        rf_backoff(spins);
    }
    return 1;
}

/* Count a call out; one that leaves another in flight renews the hold from now (the calls
 * were in flight at once until this moment). */
static inline void rf_call_leave(void)
{
    if (__atomic_sub_fetch(&rf_calls, 1, __ATOMIC_ACQ_REL) > 0)
        __atomic_store_n(&rf_shared_ns, rf_clock_ns(), __ATOMIC_RELAXED);
}

/* ---- the BLAS gate -------------------------------------------------------------------------
 * Every BLAS call of the kernels passes it (rf_blas_call_begin / _end). OpenBLAS's destructor
 * (at exit) and its fork handler (before fork) shut its worker threads down by writing a
 * "stop" mark into each worker's queue slot and joining it; a worker still running another
 * thread's product overwrites that mark with "done" when it finishes and goes back to sleep,
 * and the join waits forever (seen with gdb: blas_thread_shutdown_ in pthread_join, the worker
 * in pthread_cond_wait). So at exit and before a fork the gate closes and waits (bounded) for
 * the kernels' BLAS calls in flight to end; a kernel thread that reaches it while closed waits
 * outside BLAS: until the fork is done, or, at exit, until the process ends. */
#define RF_GATE_FORK 1
#define RF_GATE_EXIT 2
static int rf_gate = 0;
static ptrdiff_t rf_blas_in_flight = 0;

static inline void rf_blas_call_begin(void)
{
    for (;;) {
        __atomic_add_fetch(&rf_blas_in_flight, 1, __ATOMIC_SEQ_CST);
        if (__builtin_expect(__atomic_load_n(&rf_gate, __ATOMIC_SEQ_CST) == 0, 1)) return;
        __atomic_sub_fetch(&rf_blas_in_flight, 1, __ATOMIC_SEQ_CST);
        for (long spins = RF_SPIN_PAUSES; __atomic_load_n(&rf_gate, __ATOMIC_SEQ_CST); spins++)
            rf_backoff(spins);
    }
}

static inline void rf_blas_call_end(void)
{
    __atomic_sub_fetch(&rf_blas_in_flight, 1, __ATOMIC_SEQ_CST);
}

#if RF_HAVE_THREADS
/* Close the gate (set `bit`) and wait up to `ns` for the BLAS calls in flight to end. */
static void rf_gate_close(int bit, uint64_t ns)
{
    __atomic_or_fetch(&rf_gate, bit, __ATOMIC_SEQ_CST);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (long spins = 0; __atomic_load_n(&rf_blas_in_flight, __ATOMIC_SEQ_CST) > 0; spins++) {
        rf_backoff(spins);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((uint64_t)(now.tv_sec - start.tv_sec) * 1000000000u + (uint64_t)now.tv_nsec
                - (uint64_t)start.tv_nsec > ns)
            break;
    }
}

static void rf_gate_open(int bit) { __atomic_and_fetch(&rf_gate, ~bit, __ATOMIC_SEQ_CST); }
#endif

/* ---- the helper thread ------------------------------------------------------------------
 * One thread per process stays after its first call and waits for the next one: creating a
 * thread per call cost the caller about as much as a small call's overlap saves (see
 * docs/design/kernels.md). After a job the thread spins for
 * RF_POOL_SPIN_NS (a backward follows its forward, the next forward its optimizer step), then
 * sleeps on a condition variable. A call that finds it busy (calls in several Python threads)
 * runs without one: the callers already keep the cores busy. A forked child starts afresh
 * (only the forking thread survives a fork).
 */
#define RF_POOL_SPIN_NS 100000

typedef struct {
#if RF_HAVE_THREADS
    pthread_t id;
#endif
    int running;
    int pooled;        /* the pool's thread runs this job ... */
    ptrdiff_t job;     /* ... as its job number `job` */
    uint64_t posted_ns; /* when it was handed over */
} rf_thread;

#if RF_HAVE_THREADS
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int started;       /* its thread exists (under `lock`) */
    int busy;          /* a call holds it (taken by compare-and-swap) */
    void *(*fn)(void *);
    void *arg;
    ptrdiff_t posted;   /* jobs handed over (release) ... */
    ptrdiff_t finished; /* ... and done (release) */
    uint64_t picked_ns; /* when the thread took the last job up */
    /* the last job taken up, by the thread or (cancelled: rf_thread_join_or_cancel) by its
     * caller: job j is the thread's only if it moves this from j - 1 to j first */
    ptrdiff_t taken;
} rf_pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, NULL, 0, 0, 0, 0};

/* A helper that was late (descheduled: its core is busy with another process, or the machine
 * is oversubscribed) makes the next calls run alone, for a number of calls that doubles while
 * it stays late (up to RF_LATE_MAX_SKIP) and halves once it is on time: a probe now and then
 * finds out when the core is free again. Late: it took a job up, or kept the caller waiting at
 * the join, more than RF_LATE_NS and more than an eighth of the call. Only the thread holding
 * the pool writes these. */
#define RF_LATE_NS 100000
#define RF_LATE_MAX_SKIP 256
static ptrdiff_t rf_helper_skip = 0, rf_helper_backoff = 0, rf_helpers_late = 0;

static uint64_t rf_now_ns(void) { return rf_clock_ns(); }

static void *rf_pool_main(void *unused)
{
    (void)unused;
    /* Asynchronous signals (Ctrl-C) go to the process's other threads: this one lives on. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    ptrdiff_t seen = __atomic_load_n(&rf_pool.finished, __ATOMIC_ACQUIRE);
    for (;;) {
        /* the next job: spin a while, then sleep until one is posted */
        uint64_t since = rf_now_ns();
        for (long spins = 0; __atomic_load_n(&rf_pool.posted, __ATOMIC_ACQUIRE) == seen;
             spins++) {
            if ((spins & 63) == 63 && rf_now_ns() - since > RF_POOL_SPIN_NS) {
                pthread_mutex_lock(&rf_pool.lock);
                while (__atomic_load_n(&rf_pool.posted, __ATOMIC_ACQUIRE) == seen)
                    pthread_cond_wait(&rf_pool.wake, &rf_pool.lock);
                pthread_mutex_unlock(&rf_pool.lock);
                break;
            }
            rf_backoff(0);
        }
        seen++;
        ptrdiff_t expected = seen - 1;
        if (__atomic_compare_exchange_n(&rf_pool.taken, &expected, seen, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&rf_pool.picked_ns, rf_now_ns(), __ATOMIC_RELEASE);
            rf_pool.fn(rf_pool.arg); /* fn, arg written before `posted` (acquired above) */
        } /* else its caller finished without it and has cancelled it */
        __atomic_store_n(&rf_pool.finished, seen, __ATOMIC_RELEASE);
    }
    return NULL;
}

static void rf_pool_after_fork_in_child(void)
{
    pthread_mutex_init(&rf_pool.lock, NULL);
    pthread_cond_init(&rf_pool.wake, NULL);
    rf_pool.started = rf_pool.busy = 0;
    rf_pool.posted = rf_pool.finished = rf_pool.taken = 0;
    rf_helper_skip = rf_helper_backoff = 0;
    rf_calls = 0;
    rf_shared_ns = 0; /* the calls in flight were other threads', gone in the child */
}

/* Hand fn(arg) to the pool's thread, starting it if need be; 0 if it is busy or cannot start. */
static int rf_pool_post(rf_thread *t, void *(*fn)(void *), void *arg)
{
    int idle = 0;
    if (!__atomic_compare_exchange_n(&rf_pool.busy, &idle, 1, 0, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
        return 0;
    pthread_mutex_lock(&rf_pool.lock);
    if (!rf_pool.started) {
        static int fork_handler_installed = 0;
        if (!fork_handler_installed)
            fork_handler_installed = pthread_atfork(NULL, NULL, rf_pool_after_fork_in_child) == 0;
        pthread_t id;
        rf_pool.started =
            fork_handler_installed && pthread_create(&id, NULL, rf_pool_main, NULL) == 0;
        if (rf_pool.started) pthread_detach(id);
    }
    if (!rf_pool.started) {
        pthread_mutex_unlock(&rf_pool.lock);
        __atomic_store_n(&rf_pool.busy, 0, __ATOMIC_RELEASE);
        return 0;
    }
    rf_pool.fn = fn;
    rf_pool.arg = arg;
    rf_pool.picked_ns = 0;
    t->posted_ns = rf_now_ns();
    t->job = __atomic_add_fetch(&rf_pool.posted, 1, __ATOMIC_RELEASE);
    pthread_cond_signal(&rf_pool.wake);
    pthread_mutex_unlock(&rf_pool.lock);
    return 1;
}
#endif

/* Start fn(arg) on the helper thread; 0 if none started (then the caller runs fn itself):
 * fewer than two CPUs available, another kernel call in flight (rf_calls counts this one if
 * the engine entered it), or the pool's thread busy or unable to start. */
static int rf_thread_start(rf_thread *t, void *(*fn)(void *), void *arg)
{
    t->running = 0;
#if RF_HAVE_THREADS
    if (__atomic_load_n(&rf_available_cpus, __ATOMIC_RELAXED) < 2 || rf_cores_shared()) {
        __atomic_add_fetch(&rf_helpers_declined, 1, __ATOMIC_RELAXED);
        return 0;
    }
    if (__atomic_load_n(&rf_helper_skip, __ATOMIC_RELAXED) > 0) {
        __atomic_sub_fetch(&rf_helper_skip, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&rf_helpers_declined, 1, __ATOMIC_RELAXED);
        return 0;
    }
    t->pooled = t->running = rf_pool_post(t, fn, arg);
    __atomic_add_fetch(t->running ? &rf_helpers_started : &rf_helpers_declined, 1,
                       __ATOMIC_RELAXED);
#else
    (void)fn;
    (void)arg;
#endif
    return t->running;
}

#if RF_HAVE_THREADS
/* The helper was late (see RF_LATE_NS): the next calls run alone, for longer each time. */
static void rf_helper_was(int late)
{
    if (late) {
        rf_helper_backoff = rf_helper_backoff ? 2 * rf_helper_backoff : 2;
        if (rf_helper_backoff > RF_LATE_MAX_SKIP) rf_helper_backoff = RF_LATE_MAX_SKIP;
        __atomic_store_n(&rf_helper_skip, rf_helper_backoff, __ATOMIC_RELAXED);
        __atomic_add_fetch(&rf_helpers_late, 1, __ATOMIC_RELAXED);
    } else {
        rf_helper_backoff /= 2;
    }
}

static void rf_join_pooled(rf_thread *t)
{
    const uint64_t join_ns = rf_now_ns();
    rf_wait_for(&rf_pool.finished, t->job);
    const uint64_t end_ns = rf_now_ns();
    const uint64_t picked = __atomic_load_n(&rf_pool.picked_ns, __ATOMIC_ACQUIRE);
    const uint64_t call = end_ns - t->posted_ns, waited = end_ns - join_ns;
    const uint64_t pickup = picked > t->posted_ns ? picked - t->posted_ns : 0;
    rf_helper_was((pickup > RF_LATE_NS && pickup > call / 8)
                  || (waited > RF_LATE_NS && waited > call / 8));
    __atomic_store_n(&rf_pool.busy, 0, __ATOMIC_RELEASE);
}
#endif

/* Wait for fn to return, and give the pool's thread back. */
static void rf_thread_join(rf_thread *t)
{
#if RF_HAVE_THREADS
    if (t->running) rf_join_pooled(t);
#endif
    t->running = 0;
}

/* For a caller that can do all of fn's work itself (every item it left is claimed by
 * whichever thread gets there first): if the helper has not taken the job up yet, cancel it
 * and return 0 at once (the caller must then do what is left of fn, if anything); else wait
 * for it as rf_thread_join and return 1. So a descheduled helper never keeps its caller
 * waiting for it to start. */
static int rf_thread_join_or_cancel(rf_thread *t)
{
    int ran = 0;
#if RF_HAVE_THREADS
    if (t->running) {
        ptrdiff_t expected = t->job - 1;
        if (__atomic_compare_exchange_n(&rf_pool.taken, &expected, t->job, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            rf_helper_was(rf_now_ns() - t->posted_ns > RF_LATE_NS);
            /* the thread will skip the job; the next post waits for nothing of it */
            __atomic_store_n(&rf_pool.busy, 0, __ATOMIC_RELEASE);
        } else {
            rf_join_pooled(t);
            ran = 1;
        }
    }
#endif
    t->running = 0;
    return ran;
}

static inline void rf_publish(ptrdiff_t *counter, ptrdiff_t value)
{
    __atomic_store_n(counter, value, __ATOMIC_RELEASE);
}

/* Claim item `index` of a sequence whose next unclaimed item is *next: 1 if this thread got
 * it (and *next moved on), 0 if another thread had. */
static inline int rf_claim(ptrdiff_t *next, ptrdiff_t index)
{
    ptrdiff_t expected = index;
    return __atomic_compare_exchange_n(next, &expected, index + 1, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static inline ptrdiff_t rf_load(ptrdiff_t *counter)
{
    return __atomic_load_n(counter, __ATOMIC_ACQUIRE);
}

/* Fetch [p, p + bytes) into this core's cache in the background: rows that the other thread
 * wrote, which this one reads a step later. (Read on demand, each line's transfer from the
 * other core's cache stalls the loads that need it.) A read hint, prefetcht0, which every
 * x86-64 has: gcc 12 drops __builtin_prefetch in a function given target("prfchw"). */
static inline void rf_prefetch(const void *p, size_t bytes)
{
    for (size_t offset = 0; offset < bytes; offset += 64)
        __builtin_prefetch((const char *)p + offset, 0, 3);
}

/* ---- items shared out at run time ------------------------------------------------------
 * A split forward (kernels.pyx) hands out each round's items (the input projection's
 * chunks, then each time step's column panels) to whichever thread asks: one thread takes
 * them from the first, the other from the last. A thread that runs behind (its core shared
 * with another process, or with a BLAS pool still spinning after its last call) then takes
 * fewer instead of holding the other up, and at equal speeds each thread keeps its end of
 * the items, and their weights in its cache, from one step to the next. One word holds the
 * round and the range of items still unclaimed. A thread that holds no item may fall any
 * number of rounds behind (the other finishes them alone), so rounds must not wrap: a split
 * has fewer than RF_MAX_ROUNDS, and at most RF_MAX_ITEMS items a round.
 */
#define RF_ROUND_BITS 24
#define RF_ITEM_BITS 20
#define RF_ITEM_MASK (((uint64_t)1 << RF_ITEM_BITS) - 1)
#define RF_ROUND_MASK (((uint64_t)1 << RF_ROUND_BITS) - 1)
#define RF_MAX_ITEMS ((ptrdiff_t)RF_ITEM_MASK)
#define RF_MAX_ROUNDS ((ptrdiff_t)RF_ROUND_MASK)

static inline uint64_t rf_round_word(ptrdiff_t round, ptrdiff_t lo, ptrdiff_t hi)
{
    return ((uint64_t)round << (2 * RF_ITEM_BITS)) | ((uint64_t)lo << RF_ITEM_BITS) | (uint64_t)hi;
}

/* Open round `round` with items 0 .. n - 1, unless the other thread already has (or has gone
 * past it). Call only once every item of the round before has finished. */
static inline void rf_round_open(uint64_t *word, ptrdiff_t round, ptrdiff_t n)
{
    uint64_t w = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    while ((w >> (2 * RF_ITEM_BITS)) < (uint64_t)round
           && !__atomic_compare_exchange_n(word, &w, rf_round_word(round, 0, n), 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
}

/* Claim the next item of round `round` from the first (from_last 0) or the last end: its
 * index, or -1 when none is left. */
static inline ptrdiff_t rf_round_claim(uint64_t *word, ptrdiff_t round, int from_last)
{
    uint64_t w = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    for (;;) {
        const ptrdiff_t lo = (ptrdiff_t)((w >> RF_ITEM_BITS) & RF_ITEM_MASK);
        const ptrdiff_t hi = (ptrdiff_t)(w & RF_ITEM_MASK);
        if ((w >> (2 * RF_ITEM_BITS)) != (uint64_t)round || lo >= hi)
            return -1;
        const uint64_t next = from_last ? w - 1 : w + ((uint64_t)1 << RF_ITEM_BITS);
        if (__atomic_compare_exchange_n(word, &w, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
            return from_last ? hi - 1 : lo;
    }
}

/* *counter += 1, publishing this thread's writes before it to whoever waits for the count. */
static inline void rf_count(ptrdiff_t *counter)
{
    __atomic_add_fetch(counter, 1, __ATOMIC_RELEASE);
}

/* ---- the streaming step's helper -------------------------------------------------------
 * A step of one row takes a few microseconds, so handing half of it to another core pays only
 * if the hand-over costs a few cache-line transfers (about 0.2 us each between these two
 * cores, bench/experiments/step_split.c), not the pool's post, lock, signal and join. So the
 * step has a thread of its own, and one word (its own cache line) for each job: the caller
 * writes fn and arg, then publishes job j as 4j; the thread claims it (4j -> 4j + 1), runs it
 * and marks it done (4j + 2). The caller does its own part meanwhile, then either takes the
 * thread's part back if the thread has not claimed it (4j -> 4j + 3: the thread skips it, so a
 * caller never waits for a thread that has not begun) or waits for 4j + 2. One job at a time:
 * only a call that rf_call_enter found alone posts one. The thread spins RF_STEP_SPIN_NS after
 * its last job (a stream of steps from Python comes every few microseconds), then sleeps until
 * a post wakes it (that call runs alone). A forked child starts it afresh.
 */
#define RF_STEP_SPIN_NS 20000
#define RF_STEP_POSTED 0
#define RF_STEP_CLAIMED 1
#define RF_STEP_DONE 2
#define RF_STEP_TAKEN 3

typedef void (*rf_step_fn)(void *);
#if RF_HAVE_THREADS
static struct {
    ptrdiff_t state __attribute__((aligned(64))); /* 4j + one of RF_STEP_* */
    rf_step_fn fn;
    void *arg;
    int sleeping __attribute__((aligned(64))); /* 1: waits on `wake`, 2: woken (seq_cst) */
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
} rf_step = {RF_STEP_TAKEN, NULL, NULL, 0, 0, PTHREAD_MUTEX_INITIALIZER,
             PTHREAD_COND_INITIALIZER};

static void *rf_step_main(void *unused)
{
    (void)unused;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    ptrdiff_t seen = __atomic_load_n(&rf_step.state, __ATOMIC_ACQUIRE) >> 2;
    for (;;) {
        uint64_t since = rf_clock_ns();
        ptrdiff_t s;
        for (long spins = 0; ((s = __atomic_load_n(&rf_step.state, __ATOMIC_ACQUIRE)) >> 2) == seen;
             spins++) {
            if ((spins & 63) == 63 && rf_clock_ns() - since > RF_STEP_SPIN_NS) {
                pthread_mutex_lock(&rf_step.lock);
                __atomic_store_n(&rf_step.sleeping, 1, __ATOMIC_SEQ_CST);
                while ((__atomic_load_n(&rf_step.state, __ATOMIC_SEQ_CST) >> 2) == seen)
                    pthread_cond_wait(&rf_step.wake, &rf_step.lock);
                __atomic_store_n(&rf_step.sleeping, 0, __ATOMIC_SEQ_CST);
                pthread_mutex_unlock(&rf_step.lock);
                since = rf_clock_ns();
            }
            rf_backoff(0);
        }
        s = __atomic_load_n(&rf_step.state, __ATOMIC_ACQUIRE);
        seen = s >> 2;
        if ((s & 3) == RF_STEP_POSTED
            && __atomic_compare_exchange_n(&rf_step.state, &s, s + RF_STEP_CLAIMED, 0,
                                           __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            rf_step.fn(rf_step.arg); /* written before the post (acquired above) */
            __atomic_store_n(&rf_step.state, (seen << 2) + RF_STEP_DONE, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

static void rf_step_after_fork_in_child(void)
{
    pthread_mutex_init(&rf_step.lock, NULL);
    pthread_cond_init(&rf_step.wake, NULL);
    rf_step.started = rf_step.sleeping = 0;
    rf_step.state = RF_STEP_TAKEN;
}
#endif

/* Post fn(arg) to the step's thread (starting it if need be); the job's number, or 0 if the
 * thread cannot start (then nothing was posted). The caller must rf_step_finish it. */
static ptrdiff_t rf_step_post(rf_step_fn fn, void *arg)
{
#if RF_HAVE_THREADS
    if (!__atomic_load_n(&rf_step.started, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&rf_step.lock);
        if (!rf_step.started) {
            static int fork_handler = 0;
            if (!fork_handler)
                fork_handler = pthread_atfork(NULL, NULL, rf_step_after_fork_in_child) == 0;
            pthread_t id;
            if (fork_handler && pthread_create(&id, NULL, rf_step_main, NULL) == 0) {
                pthread_detach(id);
                __atomic_store_n(&rf_step.started, 1, __ATOMIC_RELEASE);
            }
        }
        pthread_mutex_unlock(&rf_step.lock);
        if (!rf_step.started) return 0;
    }
    const ptrdiff_t job = (__atomic_load_n(&rf_step.state, __ATOMIC_RELAXED) >> 2) + 1;
    rf_step.fn = fn;
    rf_step.arg = arg;
    __atomic_store_n(&rf_step.state, job << 2, __ATOMIC_SEQ_CST);
    int asleep = 1; /* wake it once per sleep: 1 -> 2 (woken) */
    if (__atomic_load_n(&rf_step.sleeping, __ATOMIC_SEQ_CST) == 1
        && __atomic_compare_exchange_n(&rf_step.sleeping, &asleep, 2, 0, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&rf_step.lock);
        pthread_cond_signal(&rf_step.wake);
        pthread_mutex_unlock(&rf_step.lock);
    }
    return job;
#else
    (void)fn;
    (void)arg;
    return 0;
#endif
}

/* After the caller's own part: 0 if the thread had not claimed job `job` (the caller then does
 * the thread's part), else 1 once the thread has done it, *waited_ns the wait. */
static int rf_step_finish(ptrdiff_t job, uint64_t *waited_ns)
{
    *waited_ns = 0;
#if RF_HAVE_THREADS
    ptrdiff_t s = job << 2;
    if (__atomic_compare_exchange_n(&rf_step.state, &s, s + RF_STEP_TAKEN, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE))
        return 0;
    if (s != (job << 2) + RF_STEP_DONE) {
        const uint64_t start = rf_clock_ns();
        for (long spins = 0;
             __atomic_load_n(&rf_step.state, __ATOMIC_ACQUIRE) != (job << 2) + RF_STEP_DONE;
             spins++)
            rf_backoff(spins);
        *waited_ns = rf_clock_ns() - start;
    }
    return 1;
#else
    (void)job;
    return 0;
#endif
}

/* ---- one BLAS thread while any call needs it ----------------------------------------------
 * OpenBLAS's pthreads build keeps one thread count for the whole process: its
 * openblas_set_num_threads_local sets that same count (checked with SciPy's OpenBLAS 0.3.30:
 * a thread's set_local(1) is seen by every other thread, and stays after it exits). So calls
 * that run at the same time, in several Python threads, share one serial section: the first
 * to enter saves the count and sets 1, the last to leave restores it. Without the BLAS's
 * functions (rf_use_blas_threads not called) these do nothing.
 */
typedef int (*rf_set_threads_fn)(int); /* sets the count, returns the previous one */
typedef int (*rf_get_threads_fn)(void);
static rf_set_threads_fn rf_blas_set_threads = NULL;
static rf_get_threads_fn rf_blas_get_threads = NULL;
static int rf_serial_depth = 0, rf_serial_saved = 0;
static int rf_serial_exiting = 0; /* the process is exiting: the count is left alone */
#if RF_HAVE_THREADS
static pthread_mutex_t rf_serial_lock = PTHREAD_MUTEX_INITIALIZER;
#define RF_LOCK() pthread_mutex_lock(&rf_serial_lock)
#define RF_UNLOCK() pthread_mutex_unlock(&rf_serial_lock)
#else
#define RF_LOCK() ((void)0)
#define RF_UNLOCK() ((void)0)
#endif

#if RF_HAVE_THREADS
/* Before a fork: close the BLAS gate and let the kernels' BLAS calls in flight end (OpenBLAS's
 * own fork handler, which runs next, shuts its workers down: see the gate), and hold the
 * serial section's lock across the fork so that no other thread holds it, or changes the
 * count, at that moment. A child forked while a call in another thread held the serial
 * section: that thread does not exist in the child, so the section is closed there and the
 * outside count restored. */
static void rf_serial_before_fork(void)
{
    rf_gate_close(RF_GATE_FORK, 2000000000u);
    pthread_mutex_lock(&rf_serial_lock);
}
static void rf_serial_after_fork_in_parent(void)
{
    pthread_mutex_unlock(&rf_serial_lock);
    rf_gate_open(RF_GATE_FORK);
}
static void rf_serial_after_fork_in_child(void)
{
    pthread_mutex_init(&rf_serial_lock, NULL);
    rf_blas_in_flight = 0;
    rf_calls = 0;
    if (rf_serial_depth > 0 && rf_serial_saved > 0 && rf_blas_set_threads != NULL)
        rf_blas_set_threads(rf_serial_saved);
    rf_serial_depth = 0;
    rf_gate_open(RF_GATE_FORK);
}
#endif

/* At exit (C atexit handlers run before the libraries' destructors): close the BLAS gate for
 * good and let the kernels' BLAS calls in flight (in daemon threads) end, so that OpenBLAS's
 * destructor finds its workers idle; a kernel thread then waits at the gate until the process
 * is gone. Put the outside count back, and let calls still running change it no more. */
static void rf_serial_at_exit(void)
{
#if RF_HAVE_THREADS
    rf_gate_close(RF_GATE_EXIT, 5000000000u);
#endif
    RF_LOCK();
    rf_serial_exiting = 1;
    if (rf_serial_depth > 0 && rf_serial_saved > 0 && rf_blas_set_threads != NULL)
        rf_blas_set_threads(rf_serial_saved);
    RF_UNLOCK();
}

static void rf_use_blas_threads(rf_set_threads_fn set_threads, rf_get_threads_fn get_threads)
{
    static int exit_handler_installed = 0;
    if (!exit_handler_installed) exit_handler_installed = atexit(rf_serial_at_exit) == 0;
#if RF_HAVE_THREADS
    static int fork_handlers_installed = 0;
    if (!fork_handlers_installed)
        fork_handlers_installed = pthread_atfork(rf_serial_before_fork,
                                                 rf_serial_after_fork_in_parent,
                                                 rf_serial_after_fork_in_child) == 0;
#endif
    RF_LOCK();
    rf_blas_set_threads = set_threads;
    rf_blas_get_threads = get_threads;
    RF_UNLOCK();
}

static int rf_blas_known(void)
{
    return rf_blas_set_threads != NULL && rf_blas_get_threads != NULL;
}

static void rf_serial_enter(void)
{
    if (!rf_blas_known()) return;
    RF_LOCK();
    if (rf_serial_depth++ == 0 && !rf_serial_exiting) rf_serial_saved = rf_blas_set_threads(1);
    RF_UNLOCK();
}

static void rf_serial_leave(void)
{
    if (!rf_blas_known()) return;
    RF_LOCK();
    if (--rf_serial_depth == 0 && rf_serial_saved > 0 && !rf_serial_exiting) {
        /* A count other than one was set from outside meanwhile (threadpoolctl, or OpenBLAS's
         * own setter): it wins over the one saved on entry. */
        int now = rf_blas_get_threads();
        if (now > 1) rf_serial_saved = now;
        rf_blas_set_threads(rf_serial_saved);
    }
    RF_UNLOCK();
}

/* The user sets the count to n (after the BLAS's own setter ran): while serial sections run,
 * n becomes the count they restore and BLAS stays at one; else BLAS is set to n again, in case
 * a section left between the setter and this call and restored the count it had saved. */
static void rf_blas_set_outside(int n)
{
    if (!rf_blas_known() || n < 1) return;
    RF_LOCK();
    if (rf_serial_depth > 0) {
        rf_serial_saved = n;
        rf_blas_set_threads(1);
    } else {
        rf_blas_set_threads(n);
    }
    RF_UNLOCK();
}

/* The BLAS thread count as set from outside (the saved one while serial sections run);
 * 0 if the BLAS's functions are unknown. */
static int rf_blas_threads(void)
{
    if (!rf_blas_known()) return 0;
    RF_LOCK();
    int n = rf_serial_depth > 0 ? rf_serial_saved : rf_blas_get_threads();
    RF_UNLOCK();
    return n;
}

#endif /* RNNFAST_THREADS_H */
