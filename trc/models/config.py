"""The model's configuration and its named presets.

:class:`TRCConfig` is a frozen dataclass: the problem's dimensions (filled in
from the problem when left ``None``), the network's widths, and the recursion
schedule.  ``PRESETS`` maps the preset names (``small`` ... ``two_level_large``)
onto config fields; :meth:`trc.models.tiny_recursive_control.TinyRecursiveControl.from_preset` builds
a model from one.

Recursion schedule, per refinement iteration (``K = num_outer_cycles`` of them):

* two-level (``use_two_level=True``): ``H_cycles`` times, ``L_cycles`` updates
  ``z_L <- core(z_L, z_H + z_init + context)`` then ``z_H <- core(z_H, z_L)``;
* single-latent: ``H_cycles`` times, ``L_cycles`` updates
  ``z <- core(z, z_init + context)`` (TRM's single-z ablation: no ``z_L``).

``use_gradient_truncation`` runs the first ``H_cycles - 1`` cycles of every
iteration without gradient and detaches the carry between iterations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trc.errors import TRCError, check


@dataclass(frozen=True)
class TRCConfig:
    """Configuration of :class:`trc.models.tiny_recursive_control.TinyRecursiveControl`.

    The four problem fields default to ``None`` and are taken from the problem
    when the model is built; given values must match it.
    """

    state_dim: int | None = None          # n_x
    control_dim: int | None = None        # n_u
    control_horizon: int | None = None    # T
    control_bounds: float | None = None   # u_max: |u| <= u_max elementwise
    latent_dim: int = 128                 # d: width of z_init, z_H, z_L
    hidden_dim: int = 256                 # width inside every MLP
    num_layers: int = 1                   # residual MLP blocks in the shared core
    num_outer_cycles: int = 3             # K: refinement iterations, each with simulator feedback
    use_two_level: bool = False           # z_H/z_L (TRM) instead of a single latent
    H_cycles: int = 1                     # cycles per iteration (truncated: only the last keeps the gradient)
    L_cycles: int = 3                     # core updates of the low (or single) latent per cycle
    use_gradient_truncation: bool = False  # early cycles without grad, carry detached
    feedback_points: int = 10             # samples of the error trajectory fed back (0: final error and cost only)
    use_halting: bool = False             # a halting head: plan() stops each start on its own (trc.models.halting)
    halt_rule: str = "halt"               # how a halting model decides (a key of trc.models.halting.HALT_RULES)
    problem_conditioning: str = "hidden"  # multi-problem models (trc.models.multi_problem): "embedding", a learned
                                          # vector per problem added to the start's encoding; "hidden", that and a
                                          # learned bias per problem on every hidden layer.  Unused by one problem
    adapter_rank: int = 0                 # multi-problem models: rank of every problem's own low-rank adapter on
                                          # each Linear of the shared network, off until a problem's is tuned
                                          # (trc.training.adapter_tuning); 0: none.  Unused by one problem

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden_dim", "num_layers", "num_outer_cycles", "H_cycles", "L_cycles",
                     "feedback_points", "adapter_rank"):
            check(name, getattr(self, name), "model config: ")
        from trc.models.halting import HALT_RULES

        if self.halt_rule not in HALT_RULES:
            raise TRCError(f"model config: halt_rule must be one of {', '.join(HALT_RULES)}, got {self.halt_rule!r}")
        if self.problem_conditioning not in ("embedding", "hidden"):
            raise TRCError(f"model config: problem_conditioning must be 'embedding' or 'hidden', "
                           f"got {self.problem_conditioning!r}")

    def resolve(self, problem) -> "TRCConfig":
        """This config with the problem fields filled in from ``problem``.

        Raises:
            TRCError: a given dimension or bound differs from the problem's.
        """
        actual = {"state_dim": problem.n_x, "control_dim": problem.n_u,
                  "control_horizon": problem.horizon, "control_bounds": float(problem.u_max)}
        for name, value in actual.items():
            given = getattr(self, name)
            if given is not None and given != value:
                raise TRCError(f"model config has {name}={given!r} but problem {problem.name!r} has {value!r}")
        return dataclasses.replace(self, **actual)

    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-able dict; ``TRCConfig.from_dict`` rebuilds the config."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TRCConfig":
        """The config stored by :meth:`to_dict`; unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TRCError(f"model config has no field {unknown[0]!r}")
        return cls(**d)


# Van der Pol (T = 100) parameter counts: small 0.09 M, medium 0.35 M, large 1.5 M, two_level_small
# 0.09 M, two_level_medium 0.28 M, two_level_large 1.2 M.  The core runs K * H_cycles * (L_cycles + 1)
# times per plan, so its width sets the speed: two_level_medium plans 1000 states, simulator feedback
# included, in 56.1 ms on one CPU thread of an idle machine (benchmarks/speed.py; the README's speed table).
PRESETS: dict[str, dict[str, Any]] = {
    "small": dict(latent_dim=64, hidden_dim=128, num_layers=1, H_cycles=1, L_cycles=3),
    "medium": dict(latent_dim=128, hidden_dim=256, num_layers=2, H_cycles=1, L_cycles=3),
    "large": dict(latent_dim=256, hidden_dim=512, num_layers=3, H_cycles=1, L_cycles=3),
    "two_level_small": dict(latent_dim=64, hidden_dim=128, num_layers=1, use_two_level=True,
                            H_cycles=2, L_cycles=2, use_gradient_truncation=True),
    "two_level_medium": dict(latent_dim=128, hidden_dim=256, num_layers=1, use_two_level=True,
                             H_cycles=2, L_cycles=2, use_gradient_truncation=True),
    "two_level_large": dict(latent_dim=256, hidden_dim=512, num_layers=2, use_two_level=True,
                            H_cycles=2, L_cycles=3, use_gradient_truncation=True),
}


def preset_config(name: str, **overrides: Any) -> TRCConfig:
    """The config of preset ``name`` with some fields changed."""
    if name not in PRESETS:
        raise TRCError(f"unknown model preset {name!r}; known presets: {', '.join(PRESETS)}")
    return TRCConfig.from_dict({**PRESETS[name], **overrides})
