/* A second thread beside a time loop, and the progress counter the two share.
 *
 * _kernels.pyx runs the sequential recursion on the calling thread and hands the GEMMs that
 * only need finished steps (the input projection ahead of the forward loop, the weight
 * gradients behind the backward loop) to one helper thread, started per call. The helper
 * follows a counter of finished steps that the owner publishes (release) and the follower
 * reads (acquire). Without POSIX threads (Windows builds) no helper starts and the caller
 * does the helper's work itself, after its loop.
 */
#ifndef RNNFAST_OVERLAP_H
#define RNNFAST_OVERLAP_H

#include <stddef.h>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#define RF_HAVE_THREADS 1
#else
#define RF_HAVE_THREADS 0
#endif

typedef struct {
#if RF_HAVE_THREADS
    pthread_t id;
#endif
    int running;
} rf_thread;

/* Start fn(arg) on a new thread; 0 if none could start (then the caller runs fn itself). */
static int rf_thread_start(rf_thread *t, void *(*fn)(void *), void *arg)
{
#if RF_HAVE_THREADS
    t->running = pthread_create(&t->id, NULL, fn, arg) == 0;
#else
    (void)fn;
    (void)arg;
    t->running = 0;
#endif
    return t->running;
}

static void rf_thread_join(rf_thread *t)
{
#if RF_HAVE_THREADS
    if (t->running) pthread_join(t->id, NULL);
#endif
    t->running = 0;
}

static inline void rf_publish(ptrdiff_t *counter, ptrdiff_t value)
{
    __atomic_store_n(counter, value, __ATOMIC_RELEASE);
}

/* Wait until *counter >= value. Spins briefly (the other side is usually microseconds
 * away), then yields the core, so that a process confined to one core still progresses. */
static inline void rf_wait_for(ptrdiff_t *counter, ptrdiff_t value)
{
    for (long spins = 0; __atomic_load_n(counter, __ATOMIC_ACQUIRE) < value; spins++) {
        if (spins < 20000) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        } else {
#if RF_HAVE_THREADS
            sched_yield();
#endif
        }
    }
}

#endif /* RNNFAST_OVERLAP_H */
