"""Reproducing the paper: its experiments as grids of `wrn train` runs, and a report beside its numbers.

- :mod:`wrn.reproduce.experiments`: every table and figure of the paper as rows of runs, with its numbers.
- :mod:`wrn.reproduce.grid`: a grid folder, its ``experiment.yaml``, each run's state and lock.
- :mod:`wrn.reproduce.runner`: training a grid, locally (``--jobs``) or on Ray (``--ray``).
- :mod:`wrn.reproduce.report`: ``report.md``, ``report.html`` and the figures, from the runs read by
  :mod:`wrn.reproduce.collect`, drawn by :mod:`wrn.reproduce.figures`, written by :mod:`wrn.reproduce.render`.

This package's ``__init__`` imports nothing, so that :mod:`wrn.reproduce.child` (which starts every run)
costs no more than a bare Python start.
"""
