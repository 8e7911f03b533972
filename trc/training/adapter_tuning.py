"""Closed-loop tuning of one problem of a multi-problem model, through that problem's own parameters.

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
93.7 / 97.9 / 96.9 / 92.7 % with seeds 0-3.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from trc.errors import TRCError
from trc.training.closed_loop_tuning import ClosedLoopTuning, tune_closed_loop

Tensor = torch.Tensor

# The adapter's rank, and the tuning's learning rate, above the single-problem tuning's 1e-4: measured on seed 0 of
# benchmarks/multi_problem.py (adapters of the same shape hooked onto the checkpoint, before they were part of trc),
# 600 steps at 3e-4 reached 89.2 % where 1e-3 reached 91.6 %.
ADAPTER_RANK = 8
ADAPTER_LR = 1e-3


@contextmanager
def own_parameters_only(model, problem: int) -> Iterator[None]:
    """Within it, only problem ``problem``'s own parameters of ``model`` (a
    :class:`~trc.models.multi_problem.MultiProblemTRC`) take gradients: its rows of the adapter, the
    embedding and the hidden biases; every other parameter is frozen and the other rows' gradients are
    zero (so Adam leaves them exactly as they are).  Restored on exit."""
    tables = [model.problem_embedding.weight]
    for name in ("problem_bias", "problem_adapter"):
        if hasattr(model, name):
            tables += list(getattr(model, name).parameters())
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


__all__ = ["ADAPTER_LR", "ADAPTER_RANK", "own_parameters_only", "tune_problem_in_closed_loop"]
