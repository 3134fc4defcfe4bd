"""Speed benchmarks: the training step of ``wrn train`` beside a plain baseline, the paper's Figure 4, the loader.

- :func:`wrn.bench.train.run` times the loop's step (and the baseline's with ``baseline=True``);
- :func:`wrn.bench.figure4.run` times the five networks of Figure 4 and :func:`wrn.bench.figure4.draw`
  draws ``figure4.png`` from its dict (``figure4.json``);
- :func:`wrn.bench.data.run` times the device-resident loader alone.

See docs/benchmarks.md for what each figure means and what was measured.
"""

from wrn.bench import data, figure4, train

__all__ = ["data", "figure4", "train"]
