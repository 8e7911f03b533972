"""Tuning one problem of a multi-problem model through that problem's own parameters.

A problem judged as a controller that replans in closed loop (the pendulum) is tuned on the cost
it realises there (:mod:`trc.training.closed_loop_tuning`).  In a
:class:`~trc.models.multi_problem.MultiProblemTRC` the network is shared, and tuning it for one
problem moves every other problem's plans.  :func:`tune_problem_in_closed_loop` therefore switches
on the problem's own low-rank adapter (:class:`~trc.models.multi_problem.ProblemAdapter`, zero at
first) and tunes it with the problem's own row of the embedding and of the hidden biases, every
other weight frozen: no other problem's plans can change, to the last bit.

Measured in ``benchmarks/multi_problem.py`` (seed 2's shared model, the pendulum's closed loop on the
benchmark's test starts): tuning the pendulum's 704 own numbers alone (embedding and biases) went
from 64.9 % to 74.0 % success and collapsed with longer tuning; tuning every weight with the other
problems' plans held lost the others (the double integrator from 96.7 % to 4.1 %); the rank-8 adapter
on every layer (15,928 numbers) reached 97.3 %.  ``trc train``'s default (1000 steps) reaches
93.7 / 97.9 / 96.9 / 92.7 / 95.5 / 94.7 % with seeds 0-5.

A problem judged by its open-loop plans can be finished the same way on its own training objective
(:func:`tune_problem_open_loop`): the shared network serves every problem a little less well than a
network of its own would, and the adapter gives back to one problem what the sharing took.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from trc.errors import TRCError
from trc.training.closed_loop_tuning import ClosedLoopTuning, tune_closed_loop

Tensor = torch.Tensor

# The adapter's rank, and the tuning's learning rate, above the single-problem tuning's 1e-4: measured on seed 0's
# checkpoint and test starts of benchmarks/multi_problem.py, in an experiment before the adapters were part of trc
# (adapters of the same shape hooked onto the checkpoint; the benchmark records the adapters' later runs): 600 steps
# at 3e-4 reached 89.2 % where 1e-3 reached 91.6 %.  On the double integrator's own objective (seeds 0 and 2,
# 40 epochs) 1e-3 reached 1.0026 / 1.0028x the optimum, 3e-3 1.0033 / 1.0020x.
ADAPTER_RANK = 8
ADAPTER_LR = 1e-3


OWN_TABLES = ("problem_embedding.", "problem_bias.", "problem_adapter.")  # a row for each problem


def own_tables(model) -> dict[str, Tensor]:
    """The parameters and buffers of ``model`` (a :class:`~trc.models.multi_problem.MultiProblemTRC`) that hold
    a row for each problem, by state-dict name: the embedding, the hidden biases and the adapters."""
    return {name: t for name, t in [*model.named_parameters(), *model.named_buffers()] if name.startswith(OWN_TABLES)}


def copy_own_rows(model, problem: int, state_dict: dict[str, Tensor]) -> None:
    """Set problem ``problem``'s rows of ``model``'s own tables (:func:`own_tables`) to ``state_dict``'s."""
    with torch.no_grad():
        for name, table in own_tables(model).items():
            table[problem] = state_dict[name][problem]


@contextmanager
def own_parameters_only(model, problem: int) -> Iterator[None]:
    """Within it, only problem ``problem``'s own parameters of ``model`` (a
    :class:`~trc.models.multi_problem.MultiProblemTRC`) take gradients: its rows of the adapter, the
    embedding and the hidden biases; every other parameter is frozen and the other rows' gradients are
    zero (so Adam leaves them exactly as they are).  Restored on exit."""
    tables = [t for t in own_tables(model).values() if isinstance(t, torch.nn.Parameter)]
    frozen = {p: p.requires_grad for p in model.parameters()}
    handles = []
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for table in tables:
            table.requires_grad_(True)
            mask = torch.zeros(table.shape[0], *[1] * (table.dim() - 1), dtype=table.dtype, device=table.device)
            mask[problem] = 1
            handles.append(table.register_hook(lambda grad, mask=mask: grad * mask))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for p, requires_grad in frozen.items():
            p.requires_grad_(requires_grad)


def tune_problem_in_closed_loop(model, problem: str | int, val_x0: Tensor, config: ClosedLoopTuning, seed: int = 0,
                                val_target: Tensor | None = None, state: dict | None = None,
                                save: Callable[[dict], None] | None = None) -> list[dict]:
    """Switch on ``problem``'s adapter in ``model`` and tune it in closed loop (module docstring).

    Args:
        model: a :class:`~trc.models.multi_problem.MultiProblemTRC` with ``config.adapter_rank > 0``.
        problem: the problem's name or id.
        val_x0, config, seed, val_target, state, save: as in
            :func:`~trc.training.closed_loop_tuning.tune_closed_loop`, on the problem's planner.

    Returns:
        The tuning's log; the model holds the cheapest validated state (step 0, the adapter still
        zero, included), in eval mode.
    """
    if not getattr(model.config, "adapter_rank", 0):
        raise TRCError("tuning one problem of a multi-problem model needs its adapters (config adapter_rank > 0)")
    planner = model.planner(problem)
    model.problem_adapter.enabled[planner.problem_index] = True
    with own_parameters_only(model, planner.problem_index):
        _, log = tune_closed_loop(planner, val_x0, config, seed=seed, val_target=val_target, state=state, save=save)
    model.eval()
    return log


def tune_problem_open_loop(model, problem: str | int, objective, train_loader, val_loader, epochs: int,
                           lr: float = ADAPTER_LR, seed: int = 0, device: str = "cpu") -> list[dict]:
    """Switch on ``problem``'s adapter in ``model`` and train it, with the problem's other own rows, on the
    problem's own objective; every other weight is frozen (:func:`own_parameters_only`).

    Args:
        model: a :class:`~trc.models.multi_problem.MultiProblemTRC` with ``config.adapter_rank > 0``.
        problem: the problem's name or id.
        objective: ``objective(planner, batch) -> (loss, parts)`` (the problem's objective in the shared
            training, :class:`~trc.training.supervised_trainer.ProcessSupervisionObjective`).
        train_loader, val_loader: the problem's training batches and validation data (with the expert's costs).
        epochs, lr, seed, device: :class:`~trc.training.trainer.TrainConfig`'s (warmup, then a cosine decay).

    Returns:
        The log, one ``{"epoch", "cost_over_expert", "success"}`` per validation (epoch 0: before). The
        model holds the epoch of the lowest validation cost over the expert's; if none beats epoch 0, the
        problem's rows are put back and its adapter switched off again. Eval mode.
    """
    from trc.training.supervised_trainer import validation_metrics
    from trc.training.trainer import TrainConfig, Trainer

    if not getattr(model.config, "adapter_rank", 0):
        raise TRCError("tuning one problem of a multi-problem model needs its adapters (config adapter_rank > 0)")
    planner = model.planner(problem)
    i = planner.problem_index
    model.eval()
    with torch.no_grad():
        before, untuned = validation_metrics(planner, val_loader), copy.deepcopy(own_tables(model))
    model.problem_adapter.enabled[i] = True
    config = TrainConfig(epochs=epochs, lr=lr, monitor="cost_over_expert", seed=seed, device=device, progress=False)
    with own_parameters_only(model, i):
        history = Trainer(config).fit(planner, objective, train_loader, lambda m: validation_metrics(m, val_loader))
    log = [{"epoch": e, "cost_over_expert": r["cost_over_expert"], "success": r["success"]}
           for e, r in enumerate([before] + [epoch["val"] for epoch in history["epochs"]])]
    if kept_epoch(log)["epoch"] == 0:
        copy_own_rows(model, i, untuned)
    model.eval()
    return log


def kept_epoch(log: list[dict]) -> dict:
    """The record of the epoch :func:`tune_problem_open_loop` kept: the cheapest, the earliest of equals (epoch 0,
    the untuned planner, included)."""
    return min(log, key=lambda r: r["cost_over_expert"])


__all__ = ["ADAPTER_LR", "ADAPTER_RANK", "OWN_TABLES", "copy_own_rows", "kept_epoch", "own_parameters_only",
           "own_tables", "tune_problem_in_closed_loop", "tune_problem_open_loop"]
