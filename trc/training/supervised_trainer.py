"""Training a Tiny Recursive Control model: behavior cloning, process supervision, ``trc train``.

Both trainers are thin over :class:`trc.training.trainer.Trainer`: they supply the loss
(:func:`trc.training.process_supervision.compute_process_supervision_loss`; behavior cloning is its
``process_weight = 0`` case), a validation function (success rate and mean
cost of the final, clipped controls on held-out data, simulated in the
problem's simulator) and checkpoints in :mod:`trc.models.checkpoint`'s format that
also carry the trainer's state, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from trc.data.datasets import as_batch
from trc.errors import TRCError
from trc.problems.vanderpol import simulate_vanderpol_torch  # the seed imports it from here
from trc.simulator import simulated_by, simulator
from trc.training.process_supervision import (DEFAULT_VARIANT, check_loss_settings, compute_process_supervision_loss,
                                              iteration_costs)
from trc.training.trainer import TrainConfig, Trainer

Tensor = torch.Tensor


def validation_metrics(model: nn.Module, val_loader, dynamics_fn: Callable | None = None,
                       cost_params: Mapping | None = None, closed_loop_every: int = 0) -> dict[str, float]:
    """Success rate, mean final error and mean cost of the model's final controls.

    With ``closed_loop_every = r > 0`` also ``closed_success`` and ``closed_cost``: the model as a
    controller that replans every ``r`` steps from the same starts, on the problem's own simulator.

    Controls are clipped to the bound and simulated (``dynamics_fn`` or the
    problem's rollout, also in the model's feedback); costs use the problem's
    ``Q, R, Qf`` unless ``cost_params`` overrides them.

    Args:
        model: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl` (``model.problem`` is used).
        val_loader: batches of start states (anything :func:`trc.data.datasets.as_batch` reads;
            the expert's ``costs`` are used when the batches are dicts that carry them).

    Returns:
        ``success`` (fraction), ``final_error``, ``cost`` (means over samples), when the
        batches carry expert costs with a positive mean ``cost_over_expert`` (ratio of the means), and for a
        halting model (which plans with halting here) the mean ``iterations`` used.
    """
    problem = model.problem
    sim = simulator(problem, dynamics_fn, cost_params)
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    totals = {"success": 0.0, "final_error": 0.0, "cost": 0.0, "expert_cost": 0.0}
    n = 0
    with simulated_by(model, sim):
        for batch in val_loader:
            batch = as_batch(batch, problem)
            x0 = torch.as_tensor(batch["initial_states"]).to(device, dtype)
            target = torch.as_tensor(batch["target_states"]).to(device, dtype)
            if getattr(model.config, "use_halting", False):  # the run it will plan with
                U, used = model.plan_halting(x0, target)
                totals["iterations"] = totals.get("iterations", 0.0) + used.sum().item()
            else:
                U = model(x0, target).controls
            costs, errors = iteration_costs(sim, U[:, None], x0, target)
            totals["success"] += (errors < problem.success_tol).sum().item()
            totals["final_error"] += errors.sum().item()
            totals["cost"] += costs.sum().item()
            totals["expert_cost"] += batch["costs"].sum().item() if "costs" in batch else math.nan
            n += x0.shape[0]
            if closed_loop_every:
                from trc.evaluation.closed_loop import closed_loop

                cl = closed_loop(model, x0, closed_loop_every, target, problem)
                totals["closed_success"] = totals.get("closed_success", 0.0) + cl.success.sum().item()
                totals["closed_cost"] = totals.get("closed_cost", 0.0) + cl.cost.sum().item()
    if n == 0:
        raise TRCError("the validation data is empty")
    out = {k: v / n for k, v in totals.items()}
    expert = out.pop("expert_cost")
    if math.isfinite(expert) and expert > 0 and sim is problem:  # the expert's costs are the problem's
        out["cost_over_expert"] = out["cost"] / expert
    return out


class ProcessSupervisionObjective:
    """``objective(model, batch) -> (loss, parts)`` for :class:`~trc.training.trainer.Trainer`.

    The model runs with all iterations; a value head, when the model carries
    one as ``model.value_predictor``, is trained on every iterate's cost.  With
    ``horizon`` set (a curriculum's progressive horizon), the loss charges only the
    first ``horizon`` steps of every plan.
    """

    def __init__(self, problem, process_weight: float, variant: str = DEFAULT_VARIANT,
                 dynamics_fn: Callable | None = None, cost_params: Mapping | None = None,
                 value_weight: float = 0.01, final_only: bool = False):
        self.problem, self.weight, self.variant, self.final_only = problem, process_weight, variant, final_only
        self.simulator, self.value_weight = simulator(problem, dynamics_fn, cost_params), value_weight
        self.horizon: int | None = None

    def __call__(self, model: nn.Module, batch):
        batch = as_batch(batch, self.problem)
        with simulated_by(model, self.simulator):
            out = model(batch["initial_states"], batch["target_states"], return_all_iterations=True)
        return self.loss_of(out, batch, getattr(model, "value_predictor", None))

    def loss_of(self, out, batch, value_predictor: nn.Module | None = None):
        """The loss of a model output (``all_controls``, ``all_latents``) on ``batch`` (see
        :func:`trc.data.datasets.as_batch`; it needs the expert's ``control_sequences``)."""
        batch = as_batch(batch, self.problem)
        if "control_sequences" not in batch:
            raise TRCError("training batches need the expert's controls: (x0, U), (x0, target, U) "
                           "or a dict with 'control_sequences'")
        U, expert = out.all_controls, batch["control_sequences"]
        if self.horizon is not None and self.horizon < U.shape[2]:
            U, expert = U[:, :, :self.horizon], expert[:, :self.horizon]
        return compute_process_supervision_loss(
            self.simulator, U, expert, batch["initial_states"],
            batch["target_states"], self.weight, variant=self.variant, value_predictor=value_predictor,
            all_latents=out.all_latents, value_weight=self.value_weight, final_only=self.final_only)


def checkpoint_io(metadata: Mapping[str, Any]):
    """``(save_fn, load_fn)`` for the trainer: :mod:`trc.models.checkpoint`'s format with the trainer state."""
    from trc.models.checkpoint import read_checkpoint, save_checkpoint

    def save_fn(model: nn.Module, path: Path, state: dict) -> None:
        save_checkpoint(model, path, trainer_state=state, **metadata)

    def load_fn(path: Path) -> tuple[dict, dict]:
        ckpt = read_checkpoint(path)
        if "trainer_state" not in ckpt:
            raise TRCError(f"checkpoint {str(path)!r} has no trainer state to resume from")
        state = dict(ckpt["state_dict"])
        if "value_predictor" in ckpt:  # a submodule while training
            state.update({f"value_predictor.{k}": v for k, v in ckpt["value_predictor"]["state_dict"].items()})
        return state, ckpt["trainer_state"]

    return save_fn, load_fn


def train_with_process_supervision(
    model: nn.Module,
    train_loader,
    val_loader=None,
    dynamics_fn: Callable | None = None,
    epochs: int = 250,
    lr: float = 3e-3,
    process_weight: float = 1.0,
    value_predictor: nn.Module | None = None,
    value_weight: float = 0.01,
    cost_params: Mapping | None = None,
    variant: str = DEFAULT_VARIANT,
    output_dir: str | Path | None = None,
    resume: bool = False,
    metadata: Mapping[str, Any] | None = None,
    hooks: Mapping[str, Callable] | None = None,
    final_only: bool = False,
    halt_tolerance: float | None = None,
    val_closed_loop: int = 0,
    **config: Any,
) -> nn.Module:
    """Train ``model`` on expert demonstrations plus the cost of every refinement iterate.

    Loss: :func:`trc.training.process_supervision.compute_process_supervision_loss` (an imitation term plus
    ``process_weight`` times a term on the iterates' costs; behavior cloning of every
    iterate when ``process_weight = 0``).  Validation after every epoch measures the
    final controls (:func:`validation_metrics`); the best epoch (lowest validation cost)
    is kept.  Build the model with ``use_gradient_truncation=True`` (as :func:`trc.training.train.build_model`
    does): each iteration is then trained as a step of its own, and the losses' gradients
    are exact although the simulator feedback carries none.

    Args:
        model: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl`; ``model.problem`` supplies the
            bound, the cost and the simulator.
        train_loader: batches of start states and expert controls: the dicts of
            ``trc.data.datasets.make_loader``, or tuples ``(x0, U)`` / ``(x0, target, U)``
            (``DataLoader(TensorDataset(x0, U))``; see :func:`trc.data.datasets.as_batch`), or a
            :class:`~trc.training.selfplay.SelfPlayData`, whose ``refresh(model, epoch)`` then runs
            before every epoch and whose ``horizon`` the loss charges (self-play, curriculum).
        val_loader: batches for validation (the same kinds), or None (the best epoch is then the
            lowest training loss).
        dynamics_fn: ``(x0 [B, n_x], U [B, T, n_u]) -> X [B, T+1, n_x]`` replacing the problem's
            rollout everywhere in this run: the loss, validation and the model's own feedback.
        epochs, lr: passes over the data and peak learning rate.
        process_weight: ``lambda >= 0``; 0 is behavior cloning.
        value_predictor: optional value head, trained on every iterate's cost and saved with
            the model (as ``model.value_predictor``).
        value_weight: weight of the value loss.
        cost_params: optional ``Q``, ``R``, ``Q_final`` replacing the problem's, everywhere in
            this run as ``dynamics_fn`` is.
        variant: process term, a key of :data:`trc.training.process_supervision.PROCESS_VARIANTS`.
        output_dir: where ``best_model.pt`` and ``last_model.pt`` go; None writes nothing.
        resume: continue from ``output_dir/last_model.pt`` when it exists.
        metadata: extra JSON-able entries stored in the checkpoints.
        hooks: the trainer's callbacks (:meth:`~trc.training.trainer.Trainer.fit`), e.g.
            ``on_epoch_end(record)``, which sees each epoch's validation metrics in ``record["val"]``.
        final_only: with ``process_weight = 0``, imitate the final iterate only (the seed's baseline;
            see :func:`train_behavior_cloning`).
        halt_tolerance: for a model with a halting head (``config.use_halting``): the relative
            improvement below which going on is not worth it (default
            :data:`trc.models.halting.DEFAULT_TOLERANCE`).  Such a model is trained by
            :class:`~trc.training.deep_supervision.DeepSupervisionObjective`: all its
            iterations, one backward pass each, and the halting head.
        val_closed_loop: ``r > 0``: validation also runs the model in closed loop from the validation starts,
            replanning every ``r`` steps (:func:`trc.evaluation.closed_loop.closed_loop`, the problem's own
            simulator), and the best epoch is the one with the lowest realised cost ``closed_cost``.
        **config: further :class:`~trc.training.trainer.TrainConfig` fields (``weight_decay``,
            ``grad_clip``, ``patience``, ``seed``, ``device``, ``progress`` ...).

    Returns:
        The trained model (best epoch's weights), with the history as ``model.training_history``
        (with self-play data, ``selfplay_log``: the archive's record after every refresh).
    """
    check_loss_settings(process_weight, variant, value_weight, final_only)
    if value_predictor is not None:
        width = getattr(value_predictor, "config", {}).get("latent_dim")
        if width is not None and width != model.config.latent_dim:
            raise TRCError(f"the value predictor reads latents of width {width}, the model's are "
                           f"{model.config.latent_dim}: create_value_predictor(model.config.latent_dim)")
        model.value_predictor = value_predictor
    problem = model.problem
    meta = {"process_weight": process_weight, "variant": variant, "value_weight": value_weight,
            "final_only": bool(final_only), "epochs": epochs, "lr": lr, **(metadata or {})}
    save_fn, load_fn = checkpoint_io(meta)
    if getattr(model.config, "use_halting", False):
        from trc.models.halting import DEFAULT_TOLERANCE
        from trc.training.deep_supervision import DeepSupervisionObjective

        tol = DEFAULT_TOLERANCE if halt_tolerance is None else halt_tolerance
        meta["halt_tolerance"] = tol
        objective = DeepSupervisionObjective(problem, process_weight, variant, value_weight, tol=tol,
                                             dynamics_fn=dynamics_fn, cost_params=cost_params)
    else:
        objective = ProcessSupervisionObjective(problem, process_weight, variant, dynamics_fn, cost_params,
                                                value_weight, final_only)
    val_fn = None if val_loader is None else (
        lambda m: validation_metrics(m, val_loader, dynamics_fn, cost_params, val_closed_loop))
    # The best epoch has the lowest validation cost (open or closed loop), or for a run of the heads
    # alone their own loss.
    monitor = ("closed_cost" if val_closed_loop else "cost") if val_loader is not None else "loss"
    heads = heads_only_validation(model, val_fn, lambda m: mean_loss(objective, m, val_loader))
    if heads is not None:
        monitor, val_fn = "loss", heads
    cfg = TrainConfig(epochs=epochs, lr=lr, monitor=monitor, mode="min",
                      checkpoint_dir=None if output_dir is None else str(output_dir), **config)
    hooks = dict(hooks or {})
    if hasattr(train_loader, "refresh"):  # self-play data: refresh it, follow its curriculum
        given = hooks.get("on_epoch_start")

        def on_epoch_start(epoch: int) -> None:
            train_loader.refresh(model, epoch)
            objective.horizon = train_loader.horizon
            if given is not None:
                given(epoch)

        hooks.update(on_epoch_start=on_epoch_start, state_dict=train_loader.state_dict,
                     load_state_dict=train_loader.load_state_dict)
    history = Trainer(cfg, save_fn, load_fn).fit(model, objective, train_loader, val_fn, hooks=hooks,
                                                    resume=resume)
    if hasattr(train_loader, "refresh"):
        history["selfplay_log"] = list(train_loader.log)  # the archive after every refresh
    model.training_history = history
    model.eval()
    return model


def heads_only_validation(model: nn.Module, val_fn: Callable | None, loss: Callable) -> Callable | None:
    """For a halting model whose planner is frozen (``--heads_only``): ``val_fn`` with ``"loss": loss(model)``
    added, the figure its best epoch is chosen by; otherwise None.

    Such a run is judged by its own loss on the validation data: the cost would prefer the epoch
    whose head halts least.
    """
    from trc.training.deep_supervision import trains_planner

    if val_fn is None or not getattr(model.config, "use_halting", False) or trains_planner(model):
        return None
    return lambda m: {**val_fn(m), "loss": loss(m)}


@torch.no_grad()
def mean_loss(objective, model: nn.Module, loader) -> float:
    """The mean of ``objective(model, batch)``'s loss over ``loader``'s samples (weighted by batch size)."""
    total, n = 0.0, 0
    for batch in loader:
        loss, _ = objective(model, batch)
        size = len(as_batch(batch, model.problem)["initial_states"])
        total, n = total + float(loss) * size, n + size
    if n == 0:
        raise TRCError("the validation data is empty")
    return total / n


def train_behavior_cloning(model: nn.Module, train_loader, val_loader=None, epochs: int = 250,
                           lr: float = 3e-3, final_only: bool = False, **kwargs: Any) -> nn.Module:
    """Train ``model`` to imitate the expert's controls.

    ``final_only=False`` (trc's behavior cloning): every iterate imitates the expert,
    ``mean_k MSE(U_k, U*)``.  ``final_only=True`` (the seed's baseline, ``train_trc.py``; ``trc
    train --baseline``): only the final controls do, ``MSE(U_K, U*)``, and the gradient reaches
    the network only through ``U_K`` (with gradient truncation only the last iteration and the
    encoder learn).  The same trainer, validation and checkpoints as
    :func:`train_with_process_supervision` with ``process_weight = 0`` (which also takes the
    remaining keyword arguments); the checkpoints record ``final_only``.
    """
    return train_with_process_supervision(model, train_loader, val_loader, epochs=epochs, lr=lr,
                                          process_weight=0.0, final_only=final_only, **kwargs)


__all__ = ["ProcessSupervisionObjective", "simulate_vanderpol_torch", "train_behavior_cloning",
           "train_with_process_supervision", "validation_metrics"]
