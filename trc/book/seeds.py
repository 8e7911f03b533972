"""Results over several seeds: mean ± std, and the book's test of whether two results are apart.

The book trains each run with a few seeds and reads a difference as real only where the means lie
further apart than the two spreads added, ``|mean_a - mean_b| > std_a + std_b`` (sample standard
deviations): with three seeds a loose test, but one that a single lucky seed does not pass.
"""

from __future__ import annotations

import statistics
from typing import Any, Sequence

import numpy as np


def pm(values: Sequence[float], digits: int) -> str:
    """``"mean ± std"`` of ``values`` (two or more), each with ``digits`` decimals."""
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def apart(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether the results ``a`` and ``b`` (one value per seed) differ by more than their spreads added."""
    return abs(statistics.mean(a) - statistics.mean(b)) > statistics.stdev(a) + statistics.stdev(b)


class SeedRows(dict):
    """Rows of a table over seeds: row name -> its runs, one per seed, each with a ``summary`` dict
    (:class:`trc.book.experiment.ExperimentResult`; :func:`trc.evaluation.metrics.summarize`)."""

    def per_seed(self, name: str, key: str) -> list[float]:
        """``summary[key]`` of row ``name``, one value per seed."""
        return [float(r.summary[key]) for r in self[name]]

    def mean(self, name: str, key: str) -> float:
        return float(statistics.mean(self.per_seed(name, key)))

    def std(self, name: str, key: str) -> float:
        return float(statistics.stdev(self.per_seed(name, key)))

    def pm(self, name: str, key: str, digits: int) -> str:
        """``"mean ± std"`` of ``summary[key]`` over row ``name``'s seeds."""
        return pm(self.per_seed(name, key), digits)

    def apart(self, a: str, b: str, key: str) -> bool:
        """Whether rows ``a`` and ``b`` differ in ``summary[key]`` by more than their spreads added."""
        return apart(self.per_seed(a, key), self.per_seed(b, key))

    def mean_summary(self, name: str) -> dict[str, Any]:
        """Row ``name``'s summaries averaged over its seeds, numbers and lists (element by element); anything
        else is the first seed's.  For :func:`trc.evaluation.metrics.format_table`."""
        out = {}
        for key, v in self[name][0].summary.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[key] = float(np.mean([r.summary[key] for r in self[name]]))
            elif isinstance(v, (list, tuple, np.ndarray)):
                out[key] = np.mean([np.asarray(r.summary[key], dtype=float) for r in self[name]], axis=0).tolist()
            else:
                out[key] = v
        return out


__all__ = ["SeedRows", "apart", "pm"]
