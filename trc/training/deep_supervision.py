"""Deep supervision over ``K_max`` iterations in constant memory, and the halting head's training.

TRM trains its recursion step by step: every supervision step is a forward pass from
the detached carry, a loss, and a backward pass, so memory does not grow with the
number of steps.  :class:`DeepSupervisionObjective` does the same inside one training
step of :class:`~trc.training.trainer.Trainer`:

1. ``U_0`` and its loss (imitation, plus the process term's ``r_0``);
2. for ``k = 1..K_max``: one refinement from the detached carry, the loss of ``U_k``
   (the per-iterate terms of :mod:`trc.training.process_supervision`: behavior cloning of
   every iterate, or the ratio/monotone process terms, plus the value head's loss), and
   its backward pass at once; the encoder's latent is a leaf that gathers its gradient
   from every step and passes it on at the end;
3. the halting head on what it reads after each iteration (the detached latent and the
   simulated costs seen, :meth:`~trc.models.tiny_recursive_control.TinyRecursiveControl.halting_features`),
   against targets built from the run's costs (:func:`trc.models.halting.halting_loss`), one
   iteration at a time.

Every start runs all ``K_max`` iterations in training, so the halting targets see the
longest run of every start (exploration is complete).  The losses equal those of
:func:`~trc.training.process_supervision.compute_process_supervision_loss` on the whole run
(the ``seed`` variant, whose terms all share ``c_0``, is not split this way).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from trc.data.datasets import as_batch
from trc.errors import TRCError
from trc.models.halting import DEFAULT_TOLERANCE, DISCOUNT, continue_targets, halting_loss, stop_targets
from trc.simulator import simulated_by, simulator
from trc.training.process_supervision import iteration_costs

Tensor = torch.Tensor
HEADS = ("halt_head.", "value_predictor.")   # parameters that are not the planner's
HINGE_WEIGHT, HINGE_MARGIN = 10.0, 1e-3   # as in monotone_process_term


class DeepSupervisionObjective:
    """``objective(model, batch) -> (loss, parts)`` that backpropagates each iteration as it runs.

    The returned loss has the value of the whole loss and the gradient of its last piece
    (the earlier pieces are already backpropagated), so the trainer's ``loss.backward()``
    completes the step.  The trainer must zero the gradients before calling it.

    Args:
        problem: the control problem.
        process_weight: ``lambda``; 0 is behavior cloning of every iterate.
        variant: ``"ratio"`` or ``"monotone"`` (with ``lambda > 0``).
        value_weight: weight of the value head's loss (when the model has one).
        halt_weight: weight of the halting head's loss (when the model has one).
        tol, gamma: the halting targets' tolerance and discount (:mod:`trc.models.halting`).
    """

    def __init__(self, problem, process_weight: float, variant: str = "monotone", value_weight: float = 0.01,
                 halt_weight: float = 1.0, tol: float = DEFAULT_TOLERANCE, gamma: float = DISCOUNT,
                 dynamics_fn: Callable | None = None, cost_params: Mapping | None = None):
        if process_weight > 0 and variant not in ("ratio", "monotone"):
            raise TRCError(f"deep supervision splits the 'ratio' and 'monotone' variants by iteration, "
                           f"not {variant!r}")
        self.problem, self.weight, self.variant = problem, process_weight, variant
        self.value_weight, self.halt_weight, self.tol, self.gamma = value_weight, halt_weight, tol, gamma
        self.simulator = simulator(problem, dynamics_fn, cost_params)
        self.horizon: int | None = None   # a curriculum's horizon is not supported: every step is charged

    def _costs(self, U: Tensor, x0: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        costs, errors = iteration_costs(self.simulator, U[:, None], x0, target)
        return costs[:, 0], errors[:, 0]

    def _piece(self, U: Tensor, z: Tensor, k: int, K: int, batch, previous: Tensor | None,
               value_head: nn.Module | None) -> tuple[Tensor, Tensor, Tensor]:
        """The loss of iterate ``k`` of ``0..K`` (graph), its cost and final error (detached)."""
        x0, target, expert = batch["initial_states"], batch["target_states"], batch["control_sequences"]
        T = U.shape[1]
        if self.weight == 0:
            loss = F.mse_loss(U, expert) / (K + 1)
            with torch.no_grad():
                cost, error = self._costs(U, x0, target)
        else:
            cost, error = self._costs(U, x0, target)
            ratio = cost / (cost.detach() if previous is None else previous)
            loss = self.weight * ratio.mean() / ((K + 1) * T)
            if k == 0:
                loss = loss + F.mse_loss(U, expert)
            elif self.variant == "monotone":
                loss = loss + self.weight * HINGE_WEIGHT * torch.relu(ratio - (1 - HINGE_MARGIN)).mean() / (K * T)
        if value_head is not None:
            value = F.mse_loss(value_head(z), value_head.target(cost.detach()))
            loss = loss + self.value_weight * value / (K + 1)
        return loss, cost.detach(), error.detach()

    def __call__(self, model: nn.Module, batch):
        batch = as_batch(batch, self.problem)
        with simulated_by(model, self.simulator):
            return self._run(model, batch)

    def _run(self, model: nn.Module, batch: Mapping[str, Tensor]):
        if not trains_planner(model):
            return self._heads_only(model, batch)
        x0, target = batch["initial_states"], batch["target_states"]
        K = model.num_iterations
        value_head = getattr(model, "value_predictor", None)
        z_init, carry = model.start(x0, target)
        U0 = carry.U
        first, cost, error = self._piece(U0, z_init, 0, K, batch, None, value_head)
        costs, features, total = [cost], [], first.detach()
        # iteration 1 refines (z_init, U_0): leaves that gather the later gradients for the encoder
        z_leaf, U_leaf = z_init.detach().requires_grad_(), U0.detach().requires_grad_()
        carry = carry.detach()
        carry.z_H, carry.U = z_leaf, U_leaf
        for k in range(1, K + 1):
            carry = model.refine(carry, x0, target, z_leaf)
            piece, cost, error = self._piece(carry.U, carry.z_H, k, K, batch, costs[-1], value_head)
            piece.backward()
            total = total + piece.detach()
            costs.append(cost)
            if getattr(model, "halt_head", None) is not None:
                features.append(model.halting_features(carry))
            carry = carry.detach()
        parts = {"success": (error < self.problem.success_tol).float().mean(),
                 "iteration_costs": torch.stack(costs, 1).mean(0)}
        head = getattr(model, "halt_head", None)
        if head is not None and self.halt_weight > 0:
            halt = self._halting(head, torch.stack(features, 1), torch.stack(costs, 1))
            total = total + halt
            parts["halt"] = halt
        last = first + (z_init * z_leaf.grad).sum() + (U0 * U_leaf.grad).sum()   # U_0's loss and the gathered gradient
        return last + (total - last.detach()), parts

    def _heads_only(self, model: nn.Module, batch: Mapping[str, Tensor]):
        """A frozen planner: run all ``K_max`` iterations without gradient, train only the heads.

        The halting head learns from the costs of the planner as it is (its targets cannot
        move under it), and the value head, when present, learns every iterate's cost.
        """
        x0, target = batch["initial_states"], batch["target_states"]
        value_head = getattr(model, "value_predictor", None)
        with torch.no_grad():
            z_init, carry = model.start(x0, target)
            cost, error = self._costs(carry.U, x0, target)
            costs, latents, features = [cost], [z_init], []
            for _ in range(model.num_iterations):
                carry = model.refine(carry, x0, target, z_init)
                cost, error = self._costs(carry.U, x0, target)
                costs.append(cost)
                latents.append(carry.z_H)
                features.append(model.halting_features(carry))
        costs = torch.stack(costs, 1)                                              # (B, K+1)
        parts = {"success": (error < self.problem.success_tol).float().mean(), "iteration_costs": costs.mean(0)}
        loss = torch.zeros((), device=x0.device)
        head = getattr(model, "halt_head", None)
        if head is not None and self.halt_weight > 0:
            halt = halting_loss(head(torch.stack(features, 1)), costs, self.tol, self.gamma)
            loss, parts["halt"] = loss + self.halt_weight * halt, halt.detach()
        if value_head is not None:
            z = torch.stack(latents, 1)                                            # (B, K+1, d)
            loss = loss + self.value_weight * F.mse_loss(value_head(z), value_head.target(costs))
        return loss, parts

    def _halting(self, head: nn.Module, features: Tensor, costs: Tensor) -> Tensor:
        """Backpropagate the halting loss iterate by iterate (``k = 1..K``); returns its (detached) value.

        Args:
            features: what the head reads after each iteration, ``[B, K, d + 3]``.
            costs: ``[B, K+1]``.
        """
        K = features.shape[1]
        with torch.no_grad():
            halt_target = stop_targets(costs, self.tol)[:, 1:]                 # (B, K)
            cont_target = continue_targets(head(features), self.gamma)         # (B, K-1)
        total = torch.zeros(())
        for k in range(K):
            logits = head(features[:, k])
            loss = F.binary_cross_entropy_with_logits(logits[:, 0], halt_target[:, k]) / K
            if k < K - 1:
                loss = loss + F.binary_cross_entropy_with_logits(logits[:, 1], cont_target[:, k]) / (K - 1)
            (self.halt_weight * loss).backward()
            total = total + loss.detach()
        return total


def trains_planner(model: nn.Module) -> bool:
    """Whether any of the planner's parameters (all but the halting and value heads) is trained."""
    return any(p.requires_grad for name, p in model.named_parameters() if not name.startswith(HEADS))


def freeze_planner(model: nn.Module) -> None:
    """Train only the heads from now on: the planner's parameters stop requiring gradients."""
    for name, p in model.named_parameters():
        if not name.startswith(HEADS):
            p.requires_grad_(False)
