"""The benchmarks: run each from the repository root as ``python -m benchmarks.NAME``
(benchmarks/README.md lists them: the question each answers, its result file, its docs page)."""
