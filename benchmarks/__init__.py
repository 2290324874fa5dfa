"""Benchmarks: bgjobs' LocalJobManager against APScheduler 3.x, ``schedule`` and a naive
``threading.Timer`` chain. Not part of the unit tests; see ``benchmarks/README.md``."""
