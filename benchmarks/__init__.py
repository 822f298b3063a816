"""Benchmarks: each module has ``run(quick: bool) -> dict`` and is registered in ``BENCHMARKS``."""

import time


def best_time(fn, reps: int) -> float:
    """Seconds of the fastest of ``reps`` calls of ``fn()`` (each waited for with
    ``jax.block_until_ready``) after one warm-up call that compiles: the least disturbed
    repetition on a shared machine."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return min(times)
