"""daskyard's benchmarks: ratios against plain baselines, measured in one run on one data set.

``python -m benchmarks`` (or ``make bench``) runs them all; see ``benchmarks/RESULTS.md``.
"""
