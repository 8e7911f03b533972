"""What the model reads: its inputs on the problem's scale and the feedback of simulating its plan.

:class:`Observer` is the part of :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl`
that knows the problem's scales; it has no parameters.  Shapes as in :mod:`trc.dynamics`.

* :meth:`Observer.inputs`: ``(x0 - c) / s`` and ``(target - c) / s`` side by side, ``[B, 2 n_x]``,
  with ``c`` and ``s`` the centre and half-width of the start box.
* :meth:`Observer.forward`: simulate ``U [B, T, n_u]`` (with the problem, or a
  :class:`~trc.simulator.Simulator` that replaces its rollout or cost) and return
  ``[B, n_x + 1 + feedback_points * n_x]``: ``symlog((x_T - target) / success_tol)``
  (the difference is the problem's ``state_error``: angles wrapped),
  ``log(1 + cost)``, and ``symlog((x_t - target) / s)`` at ``feedback_points`` evenly spaced
  steps ``t`` up to ``T``, where ``symlog(e) = sign(e) log(1 + |e|)`` (linear near 0,
  logarithmic far away).  Each feature is clipped to ``+-FEEDBACK_LIMIT`` (50: an error of
  ``e^50``), and NaN (a simulation that diverged, from a start far outside the box) reads as
  ``+FEEDBACK_LIMIT``, so the model's controls stay finite and bounded; within the limit
  nothing changes.
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor
FEEDBACK_LIMIT = 50.0


def symlog(x: Tensor) -> Tensor:
    """``sign(x) log(1 + |x|)``: keeps small errors linear and large ones in range."""
    return torch.sign(x) * torch.log1p(x.abs())


class Observer(nn.Module):
    """The problem's scales and the feedback features (see the module docstring).

    Args:
        problem: the :class:`~trc.problems.ControlProblem` whose start box, tolerance and
            horizon set the scales.
        feedback_points: samples of the error trajectory in the feedback (0: final error and cost only).
    """

    def __init__(self, problem, feedback_points: int):
        super().__init__()
        self.feedback_points = feedback_points
        self.size = problem.n_x + 1 + feedback_points * problem.n_x    # n_feedback
        low, high = (torch.tensor(v, dtype=torch.float32) for v in (problem.x0_low, problem.x0_high))
        self.register_buffer("_center", (high + low) / 2, persistent=False)
        self.register_buffer("_scale", ((high - low) / 2).clamp_min(1e-6), persistent=False)
        t = torch.linspace(problem.horizon / feedback_points, problem.horizon, feedback_points) \
            if feedback_points else torch.zeros(0)
        self.register_buffer("_feedback_steps", t.round().long(), persistent=False)

    def inputs(self, x0: Tensor, target: Tensor) -> Tensor:
        """Start states and targets ``[B, n_x]`` on the start box's scale, side by side: ``[B, 2 n_x]``."""
        return torch.cat([x0 - self._center, target - self._center], -1) / self._scale.repeat(2)

    def forward(self, sim, x0: Tensor, U: Tensor, target: Tensor) -> Tensor:
        """The feedback features ``[B, size]`` of simulating ``U`` with ``sim`` (a problem or a Simulator)."""
        X = sim.rollout(x0, U)                                                 # (B, T+1, n_x)
        E = sim.state_error(X, target.unsqueeze(1))                            # angles wrapped
        cost = sim.cost(X, U, target)                                          # (B,)
        parts = [symlog(E[:, -1] / sim.success_tol), torch.log1p(cost).unsqueeze(-1)]
        if self.feedback_points:
            parts.append(symlog(E[:, self._feedback_steps] / self._scale).flatten(1))
        fb = torch.cat(parts, -1)
        return torch.nan_to_num(fb, nan=FEEDBACK_LIMIT, posinf=FEEDBACK_LIMIT,
                                neginf=-FEEDBACK_LIMIT).clamp(-FEEDBACK_LIMIT, FEEDBACK_LIMIT)
