"""Fast mode: ``TRC_FAST=1`` shrinks every experiment so that CI runs in minutes.

Notebooks and benchmarks pick their settings with :func:`pick`, so one file
holds both the real experiment and its quick version::

    num_epochs = pick(full=200, fast=3)
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")


def fast_mode() -> bool:
    """Whether the environment variable ``TRC_FAST`` is ``"1"`` (read at each call)."""
    return os.environ.get("TRC_FAST") == "1"


def pick(full: T, fast: T) -> T:
    """``fast`` in fast mode, else ``full``."""
    return fast if fast_mode() else full
