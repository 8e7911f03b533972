"""Self-play: the model's own plans become its training data.

Process supervision learns from the cost, but its imitation term still pulls the
first guess towards the teacher.  Where the teacher is weak (clipped LQR on
``vanderpol_constrained`` or the pendulum), that pull holds the model back.
Self-play replaces the teacher's plan, start by start, with the best plan seen
so far:

**The archive** (:class:`PlanArchive`) keeps, for every start state, the cheapest
plan anyone has produced: the teacher's, any iterate of the model at any epoch,
or an exploration around the model's plan.  Every candidate is clipped to the
bound and re-simulated by the problem's simulator; an entry is replaced only
by a plan whose cost is strictly lower, so its cost never rises.

**The data** (:class:`SelfPlayData`) is an iterable of batches like
:func:`trc.data.datasets.make_loader`'s, whose ``control_sequences`` are the
archive's plans: the imitation term of every loss variant then imitates the
best plan found so far, next to the process-supervision term.  An epoch is as
many batches as the demonstrations fill, drawn from all the starts, so self-play
adds no training steps, only the refresh.  Before every
epoch (``refresh``, the trainer's ``on_epoch_start`` hook) it

1. runs the model on every start and offers each iterate to the archive;
2. explores: ``explore`` perturbed copies of the model's final plan per start
   (smooth noise: Gaussian values at ``knots`` points, linearly interpolated,
   of size ``noise * u_max``, some smaller), each offered to the archive;
3. on the first refresh, adds ``fresh_starts`` start states drawn from the
   problem's box beyond the demonstrations, their entry starting from the
   teacher's (LQR) plan;
4. with ``visited_starts > 0`` and a ``visit`` function (the states a
   replanning controller meets), adds those states as starts, overwriting
   the oldest such ones when the room is used up.

No optimizer runs on any plan: candidates come only from the model and from
random perturbations of its plans, and the simulator only judges them.  A
:class:`~trc.training.curriculum.Curriculum`, if given, restricts the starts a
batch is drawn from (start-box growth) and tells the objective how many steps
of the horizon to charge (progressive horizon extension).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from trc.errors import TRCError

Tensor = torch.Tensor


@dataclass(frozen=True)
class SelfPlayConfig:
    """Settings of :class:`SelfPlayData` (see the module docstring).

    Attributes:
        fresh_starts: start states drawn from the box beyond the demonstrations.
        explore: perturbed copies of the model's plan tried per start and refresh.
        noise: the largest perturbation's standard deviation, a fraction of ``u_max``; the
            copies cycle through ``noise``, ``noise / 3`` and ``noise / 10``.
        knots: the perturbations are smooth: drawn at this many points, interpolated.
        every: refresh the archive every this many epochs.
        visited_starts: room for states met in closed loop (needs a ``visit`` function).
    """

    fresh_starts: int = 1000
    explore: int = 8
    noise: float = 0.3
    knots: int = 10
    every: int = 1
    visited_starts: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.fresh_starts >= 0, f"fresh_starts must be >= 0, got {self.fresh_starts}"),
            (self.explore >= 0, f"explore must be >= 0, got {self.explore}"),
            (math.isfinite(self.noise) and self.noise >= 0, f"noise must be >= 0, got {self.noise}"),
            (self.knots >= 2, f"knots must be >= 2, got {self.knots}"),
            (self.every >= 1, f"every must be >= 1, got {self.every}"),
            (self.visited_starts >= 0, f"visited_starts must be >= 0, got {self.visited_starts}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TRCError(f"self-play: {message}")


class PlanArchive:
    """The cheapest plan seen so far for every start state.

    Args:
        problem: bound, simulator and cost.
        x0: start states ``[N, n_x]``.
        target: targets ``[N, n_x]``.
        U: first plans ``[N, T, n_u]`` (clipped and simulated here).
    """

    def __init__(self, problem, x0: Tensor, target: Tensor, U: Tensor):
        self.problem = problem
        self.x0, self.target = x0.clone(), target.clone()
        self.U = problem.clip(U.to(x0.dtype)).clone()
        self.cost = self.simulate(self.U, torch.arange(len(x0)))
        self.improved = 0  # entries replaced since the archive was made

    def __len__(self) -> int:
        return self.x0.shape[0]

    @torch.no_grad()
    def simulate(self, U: Tensor, idx: Tensor) -> Tensor:
        """The cost ``[b]`` of the clipped plans ``U [b, T, n_u]`` from the starts ``idx [b]``."""
        out = self.problem.evaluate(self.x0[idx], U, self.target[idx])
        cost = out["cost"]
        return torch.where(torch.isfinite(cost), cost, torch.full_like(cost, math.inf))

    @torch.no_grad()
    def offer(self, U: Tensor, idx: Tensor | None = None) -> int:
        """Offer plans ``U [b, T, n_u]`` for the starts ``idx [b]`` (default: all); keep the cheaper.

        Several plans may be offered for the same start at once: the cheapest of them competes.

        Returns:
            How many entries were replaced.
        """
        idx = torch.arange(len(self)) if idx is None else idx
        U = self.problem.clip(U.to(self.U.dtype))
        cost = self.simulate(U, idx)
        best = torch.full((len(self),), math.inf, dtype=cost.dtype)
        best.scatter_reduce_(0, idx, cost, "amin")
        winner = (cost == best[idx]) & (cost < self.cost[idx])
        rows = torch.nonzero(winner).squeeze(1)
        # one winner per start (the first of equal ones)
        first = torch.full((len(self),), -1, dtype=torch.long)
        first.scatter_(0, idx[rows].flip(0), rows.flip(0))
        rows = first[first >= 0]
        self.U[idx[rows]] = U[rows]
        self.cost[idx[rows]] = cost[rows]
        self.improved += len(rows)
        return len(rows)

    def add(self, x0: Tensor, target: Tensor, U: Tensor, slots: Tensor | None = None) -> None:
        """Append new starts with first plans ``U``, or overwrite the entries ``slots`` with them."""
        U = self.problem.clip(U.to(self.U.dtype))
        if slots is None:
            start = len(self)
            self.x0 = torch.cat([self.x0, x0.to(self.x0.dtype)])
            self.target = torch.cat([self.target, target.to(self.target.dtype)])
            self.U = torch.cat([self.U, U])
            self.cost = torch.cat([self.cost, torch.full((len(x0),), math.inf, dtype=self.cost.dtype)])
            slots = torch.arange(start, len(self))
        else:
            self.x0[slots], self.target[slots], self.U[slots] = x0.to(self.x0.dtype), target, U
        self.cost[slots] = self.simulate(self.U[slots], slots)


def smooth_noise(shape: tuple[int, int, int], knots: int, generator: torch.Generator,
                 dtype=torch.float32) -> Tensor:
    """Unit Gaussian noise at ``knots`` points along the horizon, linearly interpolated: ``[b, T, n_u]``."""
    b, T, n_u = shape
    values = torch.randn(b, n_u, knots, generator=generator, dtype=dtype)
    return torch.nn.functional.interpolate(values, size=T, mode="linear", align_corners=True).transpose(1, 2)


def plans_of(model: nn.Module, x0: Tensor, target: Tensor, batch: int = 1024) -> Tensor:
    """Every iterate of the model's plans, ``[N, K+1, T, n_u]``, without gradient, in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = [model(x0[i:i + batch], target[i:i + batch], return_all_iterations=True).all_controls
               for i in range(0, len(x0), batch)]
    model.train(was_training)
    return torch.cat(out)


VISIT_ROLLOUTS, VISIT_KEEP = 32, 64  # closed loops run, and states kept, per refresh


def closed_loop_visits(model: nn.Module, x0: Tensor, target: Tensor) -> Tensor:
    """The states ``[B T, n_x]`` the model meets as a controller replanning every step from ``x0 [B, n_x]``."""
    from trc.evaluation.closed_loop import closed_loop

    problem = model.problem
    X = closed_loop(model, x0, replan_every=1, target=target).X[:, 1:]       # (B, T, n_x)
    return problem.wrap_state(X.reshape(-1, problem.n_x))


class SelfPlayData:
    """Batches of the archive's best plans, refreshed by the model's own plans (module docstring).

    Args:
        problem: the control problem.
        data: the demonstrations (``initial_states``, ``target_states``, ``control_sequences``).
        batch_size: samples per batch.
        config: the self-play settings; None keeps the demonstrations (only the curriculum acts).
        curriculum: a :class:`~trc.training.curriculum.Curriculum`, or None.
        seed: seeds the fresh starts, the explorations and the batches.
        teacher: ``teacher(problem, x0) -> U``, the first plan of a fresh start
            (default: the LQR expert).
        visit: ``visit(model, x0, target) -> states [M, n_x]``, the states met in closed loop from
            starts ``x0`` (:func:`closed_loop_visits`); needed for ``visited_starts``.
        epochs: the length of the run (the curriculum's clock).
    """

    def __init__(self, problem, data: dict, batch_size: int, config: SelfPlayConfig | None = None,
                 curriculum=None, seed: int = 0, teacher: Callable | None = None,
                 visit: Callable | None = None, epochs: int = 1):
        if batch_size <= 0:
            raise TRCError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.problem, self.batch_size, self.config = problem, batch_size, config
        self.curriculum, self.visit, self.epochs = curriculum, visit, epochs
        as_t = lambda k: torch.as_tensor(data[k], dtype=torch.float32)  # noqa: E731
        self.archive = PlanArchive(problem, as_t("initial_states"), as_t("target_states"),
                                   as_t("control_sequences"))
        self.num_demos = len(self.archive)
        self.generator = torch.Generator().manual_seed(seed)   # reseeded by the trainer every epoch
        self._explore_gen = torch.Generator().manual_seed(seed + 1)
        if config is not None and config.fresh_starts:
            if teacher is None:
                from trc.data.experts import lqr_controls as teacher
            fresh = problem.sample_initial_states(config.fresh_starts, torch.Generator().manual_seed(seed + 2))
            self.archive.add(fresh, problem.target_like(fresh), teacher(problem, fresh))
        self._visited_slots = torch.empty(0, dtype=torch.long)
        self._next_slot = 0
        # an epoch is as many batches as the demonstrations fill: self-play costs no extra steps
        self.num_batches = max(1, math.ceil(self.num_demos / batch_size))
        self.epoch = 0
        self.log: list[dict] = []

    def __len__(self) -> int:
        return self.num_batches

    @property
    def horizon(self) -> int | None:
        """Steps of the horizon the loss charges this epoch (None: all)."""
        if self.curriculum is None:
            return None
        return self.curriculum.horizon(self.epoch, self.epochs, self.problem.horizon)

    def active(self) -> Tensor:
        """The archive entries batches are drawn from this epoch (the curriculum's box, else all)."""
        n = len(self.archive)
        if self.curriculum is None:
            return torch.arange(n)
        return self.curriculum.select(self.problem, self.archive.x0, self.epoch, self.epochs,
                                      minimum=self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        idx = self.active()
        need = self.num_batches * self.batch_size
        order = torch.cat([idx[torch.randperm(len(idx), generator=self.generator)]
                           for _ in range(math.ceil(need / len(idx)))])[:need]
        for b in range(self.num_batches):
            rows = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield {"initial_states": self.archive.x0[rows], "target_states": self.archive.target[rows],
                   "control_sequences": self.archive.U[rows], "costs": self.archive.cost[rows]}

    @torch.no_grad()
    def refresh(self, model: nn.Module, epoch: int) -> dict:
        """Before ``epoch``: offer the model's plans and explorations to the archive (module docstring).

        Returns:
            A record ``{epoch, starts, improved, mean_cost}`` (also appended to ``self.log``).
        """
        self.epoch = epoch
        cfg = self.config
        if cfg is None or epoch % cfg.every:
            return {}
        archive = self.archive
        if self.visit is not None and cfg.visited_starts:
            self._add_visited(model)
        before = archive.cost.clone()
        plans = plans_of(model, archive.x0, archive.target)              # (N, K+1, T, n_u)
        N, K1, T, n_u = plans.shape
        idx = torch.arange(N)
        for k in range(K1):
            archive.offer(plans[:, k], idx)
        final = plans[:, -1]
        for j in range(cfg.explore):
            scale = cfg.noise * self.problem.u_max / (1, 3, 10)[j % 3]
            noise = smooth_noise((N, T, n_u), cfg.knots, self._explore_gen, final.dtype)
            archive.offer(final + scale * noise, idx)
        improved = int((archive.cost < before).sum())
        record = {"epoch": epoch, "starts": N, "improved": improved,
                  "mean_cost": float(archive.cost[torch.isfinite(archive.cost)].mean())}
        self.log.append(record)
        return record

    def state_dict(self) -> dict:
        """The archive and the exploration's random state, for an exact resume."""
        a = self.archive
        return {"x0": a.x0.clone(), "target": a.target.clone(), "U": a.U.clone(), "cost": a.cost.clone(),
                "improved": a.improved, "explore_rng": self._explore_gen.get_state(),
                "visited_slots": self._visited_slots.clone(), "next_slot": self._next_slot, "log": list(self.log)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        a = self.archive
        a.x0, a.target, a.U, a.cost = state["x0"], state["target"], state["U"], state["cost"]
        a.improved = state["improved"]
        self._explore_gen.set_state(state["explore_rng"])
        self._visited_slots, self._next_slot, self.log = state["visited_slots"], state["next_slot"], list(state["log"])

    def _add_visited(self, model: nn.Module) -> None:
        """Add states the model meets in closed loop as starts, in a ring of ``visited_starts`` slots.

        Each refresh runs the closed loop from ``VISIT_ROLLOUTS`` archive starts (visited ones
        included, so later visits reach further) and keeps ``VISIT_KEEP`` of the states met.
        """
        cfg, archive = self.config, self.archive
        pick = torch.randperm(len(archive), generator=self._explore_gen)[:VISIT_ROLLOUTS]
        states = self.visit(model, archive.x0[pick], archive.target[pick]).to(archive.x0.dtype)
        states = states[torch.randperm(len(states), generator=self._explore_gen)[:min(VISIT_KEEP, cfg.visited_starts)]]
        states = states[torch.isfinite(states).all(1)]
        if not len(states):
            return
        target = self.problem.target_like(states)
        U = plans_of(model, states, target)[:, -1]
        room = cfg.visited_starts - len(self._visited_slots)
        if room > 0:
            k = min(room, len(states))
            archive.add(states[:k], target[:k], U[:k])
            self._visited_slots = torch.cat([self._visited_slots, torch.arange(len(archive) - k, len(archive))])
            states, target, U = states[k:], target[k:], U[k:]
        if len(states):
            pos = (self._next_slot + torch.arange(len(states))) % len(self._visited_slots)
            self._next_slot = int(pos[-1] + 1) % len(self._visited_slots)
            archive.add(states, target, U, self._visited_slots[pos])


__all__ = ["PlanArchive", "SelfPlayConfig", "SelfPlayData", "closed_loop_visits", "plans_of", "smooth_noise"]
