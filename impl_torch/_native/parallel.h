/* What the kernels share: how many threads a call takes, and running its jobs on them. Each
 * element (or row) is computed alone, so no result depends on the thread count. */
#ifndef OUTPUT_LIMITS_PARALLEL_H
#define OUTPUT_LIMITS_PARALLEL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_THREADS 256
/* Elements per thread at least: below that, starting a thread costs more than it saves. */
#define MIN_PER_THREAD (1 << 15)

/* The threads asked for, at most one per MIN_PER_THREAD of ``elements`` and one per ``units``
 * (the pieces that cannot be split: elements, or rows), at least 1. */
static inline int thread_count(int threads, int64_t elements, int64_t units) {
    int64_t most = elements / MIN_PER_THREAD;
    most = most < units ? most : units;
    int t = threads < 1 ? 1 : (threads > MAX_THREADS ? MAX_THREADS : threads);
    if (t > most) t = most < 1 ? 1 : (int)most;
    return t;
}

/* fn on each of the ``t`` jobs laid out ``size`` bytes apart from ``jobs``: the first on this
 * thread, the others on threads of their own (on this one where none can be had). */
static inline void run_jobs(void *(*fn)(void *), void *jobs, size_t size, int t) {
    pthread_t ids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    char *base = jobs;
    for (int i = 1; i < t; i++) started[i] = pthread_create(&ids[i], NULL, fn, base + i * size) == 0;
    fn(base);
    for (int i = 1; i < t; i++) {
        if (started[i]) pthread_join(ids[i], NULL);
        else fn(base + i * size);
    }
}

#endif
