"""Shared fixtures: a headless matplotlib that every test leaves clean, and the markers.

The backend is chosen in this process only (``matplotlib.use``), never through
``MPLBACKEND``. Notebook kernels started by nbval or the book build inherit the
environment, and with ``MPLBACKEND=Agg`` they would show no figures.
"""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: builds the book and opens it in headless Chromium "
        "(deselect with -m 'not browser')")


@pytest.fixture(autouse=True)
def close_figures():
    """Close every figure a test opened, and restore matplotlib's defaults."""
    with matplotlib.rc_context():
        yield
    plt.close("all")
