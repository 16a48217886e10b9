"""Benchmarks: run by ``make bench``, each writing into one JSON report."""
