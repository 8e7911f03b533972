"""Value head: predict the trajectory cost of a plan from the model's latent.

The head predicts ``log(1 + cost)``: costs span orders of magnitude across
start states and iterations, their logarithm does not.  :meth:`ValuePredictor.target`
maps costs onto that scale (train against it) and :meth:`ValuePredictor.predict_cost`
maps predictions back.  It is the base for adaptive halting: stop refining when
the predicted cost stops falling.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trc.errors import TRCError

Tensor = torch.Tensor

VALUE_SIZES: dict[str, dict[str, int]] = {
    "small": dict(hidden_dim=32, num_layers=1),
    "medium": dict(hidden_dim=64, num_layers=2),
    "large": dict(hidden_dim=128, num_layers=3),
}


class ValuePredictor(nn.Module):
    """An MLP ``latent [B, d] -> predicted log(1 + cost) [B]``.

    Args:
        latent_dim: ``d``, the model's ``config.latent_dim``.
        hidden_dim: width of the hidden layers.
        num_layers: number of hidden layers (each ``Linear -> SiLU``).
    """

    def __init__(self, latent_dim: int, hidden_dim: int = 32, num_layers: int = 1):
        super().__init__()
        if min(latent_dim, hidden_dim, num_layers) < 1:
            raise TRCError(f"value predictor needs positive sizes, got latent_dim={latent_dim}, "
                           f"hidden_dim={hidden_dim}, num_layers={num_layers}")
        self.config: dict[str, Any] = dict(latent_dim=latent_dim, hidden_dim=hidden_dim, num_layers=num_layers)
        layers: list[nn.Module] = []
        width = latent_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden_dim), nn.SiLU()]
            width = hidden_dim
        self.mlp = nn.Sequential(*layers, nn.Linear(width, 1))

    def forward(self, latent: Tensor) -> Tensor:
        """Predicted ``log(1 + cost)``: ``latent [..., d] -> [...]`` (``[B, K+1, d] -> [B, K+1]`` works too)."""
        return self.mlp(latent).squeeze(-1)

    @staticmethod
    def target(cost: Tensor) -> Tensor:
        """The training target for costs ``[...]``: ``log(1 + cost)``, without gradient."""
        return torch.log1p(cost.detach().clamp_min(0))

    def predict_cost(self, latent: Tensor) -> Tensor:
        """Predicted cost itself, ``expm1`` of :meth:`forward`: ``[..., d] -> [...]``."""
        return torch.expm1(self(latent))

    def get_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_value_predictor(latent_dim: int = 128, size: str = "small") -> ValuePredictor:
    """A value head of the named size (``small``, ``medium`` or ``large``) for latents of width ``latent_dim``."""
    if size not in VALUE_SIZES:
        raise TRCError(f"unknown value predictor size {size!r}; known sizes: {', '.join(VALUE_SIZES)}")
    return ValuePredictor(latent_dim, **VALUE_SIZES[size])
