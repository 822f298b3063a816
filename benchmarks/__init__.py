"""Benchmarks: each module has ``run(quick: bool) -> dict`` and is registered in ``BENCHMARKS``."""
