"""Curriculum: easy problems first, then harder ones.

Two schedules, each a fraction that grows linearly from its start value to 1
over the first ``ramp`` of the epochs and stays at 1 after:

**Start-box growth** (``box_start < 1``).  A start's difficulty is its distance
from the target in units of the start box, ``d(x0) = max_i |x0_i - target_i| /
h_i`` with ``h_i`` the box's half-width (0 at the target, 1 at the box's edge).
An epoch draws its batches only from the starts with ``d <= box_scale`` (at
least ``minimum`` of the nearest ones), so the model first learns to steer
from near the target, then from ever farther.

**Progressive horizon extension** (``horizon_start < 1``).  The loss charges only
the first ``H = ceil(horizon_fraction * T)`` steps of each plan (the imitation
term and the cost, with the terminal cost at step ``H``); the model still plans
all ``T`` steps and validation always judges the full horizon.

``Curriculum()`` (both starts at 1) changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trc.errors import TRCError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Curriculum:
    """The two schedules (see the module docstring).

    Attributes:
        box_start: fraction of the start box at epoch 0 (1: no growth).
        horizon_start: fraction of the horizon charged at epoch 0 (1: no extension).
        ramp: fraction of the epochs over which both grow to 1.
    """

    box_start: float = 1.0
    horizon_start: float = 1.0
    ramp: float = 0.5

    def __post_init__(self) -> None:
        for name in ("box_start", "horizon_start"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= 1):
                raise TRCError(f"curriculum: {name} must be in (0, 1], got {value}")
        if not (math.isfinite(self.ramp) and 0 < self.ramp <= 1):
            raise TRCError(f"curriculum: ramp must be in (0, 1], got {self.ramp}")

    @property
    def active(self) -> bool:
        """Whether either schedule does anything."""
        return self.box_start < 1 or self.horizon_start < 1

    def fraction(self, start: float, epoch: int, epochs: int) -> float:
        """``start`` growing linearly to 1 by epoch ``ramp * epochs``."""
        progress = min(1.0, epoch / max(1.0, self.ramp * epochs))
        return start + (1.0 - start) * progress

    def box_scale(self, epoch: int, epochs: int) -> float:
        """The fraction of the start box in play at ``epoch`` of ``epochs``."""
        return self.fraction(self.box_start, epoch, epochs)

    def horizon(self, epoch: int, epochs: int, T: int) -> int:
        """The steps of the horizon ``T`` the loss charges at ``epoch`` of ``epochs`` (1..T)."""
        return max(1, min(T, math.ceil(self.fraction(self.horizon_start, epoch, epochs) * T - 1e-9)))

    def select(self, problem, x0: Tensor, epoch: int, epochs: int, minimum: int = 1) -> Tensor:
        """Indices of the starts ``x0 [N, n_x]`` in play at ``epoch`` (at least ``minimum`` nearest ones)."""
        d = difficulty(problem, x0)
        inside = torch.nonzero(d <= self.box_scale(epoch, epochs) + 1e-9).squeeze(1)
        if len(inside) >= min(minimum, len(x0)):
            return inside
        return torch.argsort(d)[:minimum]


def difficulty(problem, x0: Tensor) -> Tensor:
    """``max_i |x0_i - target_i| / h_i`` per start ``[N]``: 0 at the target, 1 at the box's edge."""
    low = torch.tensor(problem.x0_low, dtype=x0.dtype)
    high = torch.tensor(problem.x0_high, dtype=x0.dtype)
    target = torch.tensor(problem.target, dtype=x0.dtype)
    half = ((high - low) / 2).clamp_min(1e-12)
    return ((x0 - target).abs() / half).amax(dim=1)


__all__ = ["Curriculum", "difficulty"]
