"""Test helpers importable as ``support`` (pytest puts tests/ on the path) or ``tests.support``
(from the repository root, e.g. benchmarks/ and driver subprocesses)."""
