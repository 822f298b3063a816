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


def interleaved_times(fns: dict, rounds: int, n: int) -> dict:
    """Seconds per call of each ``fns[name]()`` (each already compiled, each waiting for its result):
    the fastest of ``rounds`` rounds of ``n`` calls, the callables interleaved within each round (in a
    rotated order) so that load from other processes reaches all of them alike."""
    best, names = {name: float("inf") for name in fns}, list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # each round starts at another one
            once = fns[name]
            t0 = time.perf_counter()
            for _ in range(n):
                once()
            best[name] = min(best[name], (time.perf_counter() - t0) / n)
    return best
