"""The book's results over seeds: mean ± std and the 'apart' test (trc.book.seeds)."""

from types import SimpleNamespace

import pytest

from trc.book.seeds import SeedRows, apart, pm


def test_pm_gives_the_mean_and_sample_std():
    assert pm([1.0, 2.0, 3.0], 2) == "2.00 ± 1.00"
    assert pm([10, 10], 0) == "10 ± 0"


@pytest.mark.parametrize("a, b, expected", [
    ([1.0, 2.0, 3.0], [4.5, 5.0, 5.5], True),     # means 3 apart, spreads 1 + 0.5
    ([1.0, 2.0, 3.0], [3.0, 3.5, 4.0], False),    # means 1.5 apart, spreads 1 + 0.5: not beyond
    ([5.0, 5.0], [5.0, 5.0], False),              # equal: never apart
])
def test_apart_needs_the_means_further_than_the_spreads_added(a, b, expected):
    assert apart(a, b) is expected and apart(b, a) is expected


def test_seed_rows_read_each_seeds_summary():
    def run(success, curve):
        return SimpleNamespace(summary={"success_rate": success, "curve": curve, "problem": "vanderpol",
                                        "converged": True})

    rows = SeedRows(BC=[run(10.0, [3.0, 1.0]), run(20.0, [5.0, 3.0])],
                    PS=[run(90.0, [2.0, 1.0]), run(92.0, [2.0, 1.0])])
    assert rows.per_seed("BC", "success_rate") == [10.0, 20.0]
    assert rows.mean("BC", "success_rate") == 15.0 and rows.std("PS", "success_rate") == pytest.approx(2 ** 0.5)
    assert rows.pm("BC", "success_rate", 1) == "15.0 ± 7.1"
    assert rows.apart("BC", "PS", "success_rate") and not rows.apart("BC", "BC", "success_rate")
    mean = rows.mean_summary("BC")
    assert mean == {"success_rate": 15.0, "curve": [4.0, 2.0], "problem": "vanderpol", "converged": True}
