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
   of size ``noise * u_max``, some smaller), each offered to the archive; with
   ``explore_best`` every other copy perturbs the archive's own plan instead;
3. stitches (``stitch`` candidates per start, :func:`stitched`): the archive
   plan's first ``k`` controls, then the model's plan from the state they reach;
4. passes plans between starts (``neighbours``): each start is offered the
   archive plans of its nearest other starts (:func:`nearest`);
5. with ``tail_starts > 0``, adds later states along the archive's plans as
   starts (:func:`tails`), each with the rest of its plan, ``U[k:]``, then the
   model's plan from where that ends, in a ring of ``tail_starts`` slots.
   Together with 4 this is dynamic programming without an optimizer: a good
   ending found from one state becomes a candidate for every start whose plan
   reaches near it, and the states a good plan passes through, which a
   replanning controller meets, get plans of their own;
6. when the data is built (before the first refresh), adds ``fresh_starts`` start
   states drawn from the problem's box beyond the demonstrations, their entry starting from the
   teacher's (LQR) plan;
7. with ``visited_starts > 0`` and a ``visit`` function (the states a
   replanning controller meets), adds those states as starts, overwriting
   the oldest such ones when the room is used up.

No optimizer runs on any plan: candidates come only from the model, from
random perturbations of its plans and from splicing plans the archive holds,
and the simulator only judges them.  A
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
        stitch: stitched candidates (archive prefix, then the model's plan) per start and refresh.
        explore_best: every other perturbed copy perturbs the archive's plan, not the model's.
        tail_starts: room for later states along the archive's plans, added as starts.
        neighbours: archive plans of this many nearest other starts offered to each start.
    """

    fresh_starts: int = 1000
    explore: int = 8
    noise: float = 0.3
    knots: int = 10
    every: int = 1
    visited_starts: int = 0
    stitch: int = 0
    explore_best: bool = False
    tail_starts: int = 0
    neighbours: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.fresh_starts >= 0, f"fresh_starts must be >= 0, got {self.fresh_starts}"),
            (self.explore >= 0, f"explore must be >= 0, got {self.explore}"),
            (math.isfinite(self.noise) and self.noise >= 0, f"noise must be >= 0, got {self.noise}"),
            (self.knots >= 2, f"knots must be >= 2, got {self.knots}"),
            (self.every >= 1, f"every must be >= 1, got {self.every}"),
            (self.visited_starts >= 0, f"visited_starts must be >= 0, got {self.visited_starts}"),
            (self.stitch >= 0, f"stitch must be >= 0, got {self.stitch}"),
            (self.tail_starts >= 0, f"tail_starts must be >= 0, got {self.tail_starts}"),
            (self.neighbours >= 0, f"neighbours must be >= 0, got {self.neighbours}"),
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


def join(first: Tensor, second: Tensor, k: Tensor, offset: Tensor | int = 0) -> Tensor:
    """Two plans spliced per row at step ``k [b]``: ``first[t + offset]`` for ``t < k``, then ``second[t - k]``.

    Args:
        first, second: plans ``[b, T, n_u]``.
        k: the splice step per row, ``[b]``, in ``0..T``.
        offset: ``[b]`` or an int; ``first``'s controls are read from step ``offset`` on (``t + offset < T``).

    Returns:
        ``[b, T, n_u]``.
    """
    T = first.shape[1]
    t = torch.arange(T)[None, :, None]                                           # (1, T, 1)
    k = k[:, None, None]
    offset = torch.as_tensor(offset).reshape(-1, 1, 1)
    head = first.gather(1, (t + offset).clamp_max(T - 1).expand_as(first))
    tail = second.gather(1, (t - k).clamp_min(0).expand_as(second))
    return torch.where(t < k, head, tail)


@torch.no_grad()
def stitched(model: nn.Module, archive: PlanArchive, generator: torch.Generator) -> Tensor:
    """Every archive plan's first ``k`` controls, then the model's plan from where they lead: ``[N, T, n_u]``.

    ``k`` is drawn per start from ``1..T-1``; the model plans from the state ``X[k]`` that the
    archive's plan reaches, and its first ``T - k`` controls complete the candidate.
    """
    problem = archive.problem
    N, T, _ = archive.U.shape
    X = problem.rollout(archive.x0, archive.U)                                   # (N, T+1, n_x)
    k = torch.randint(1, T, (N,), generator=generator)
    xk = problem.wrap_state(X[torch.arange(N), k]).nan_to_num()
    V = plans_of(model, xk, archive.target)[:, -1].to(archive.U.dtype)          # (N, T, n_u)
    return join(archive.U, V, k)


@torch.no_grad()
def nearest(x: Tensor, m: int, chunk: int = 1024) -> Tensor:
    """The indices ``[N, m]`` of each point's ``m`` nearest others among ``x [N, n_x]`` (Euclidean)."""
    out = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)                                       # (c, N)
        d[torch.arange(len(d)), torch.arange(i, i + len(d))] = math.inf
        out.append(d.topk(min(m, len(x) - 1), largest=False).indices)
    return torch.cat(out)


@torch.no_grad()
def tails(model: nn.Module, archive: PlanArchive, rows: Tensor, generator: torch.Generator
          ) -> tuple[Tensor, Tensor]:
    """Later starts along the archive's trajectories, and their plans: ``(x [b, n_x], U [b, T, n_u])``.

    For each entry ``rows [b]``, a step ``k`` drawn from ``1..T-1``: the start is the state ``X[k]``
    its plan reaches, the plan the rest of its controls, ``U[k:]``, then the model's first ``k``
    controls from the state ``X[T]`` where they end.
    """
    problem = archive.problem
    U = archive.U[rows]
    b, T, _ = U.shape
    X = problem.rollout(archive.x0[rows], U)                                     # (b, T+1, n_x)
    k = torch.randint(1, T, (b,), generator=generator)
    x = problem.wrap_state(X[torch.arange(b), k])
    end = problem.wrap_state(X[:, -1]).nan_to_num()
    V = plans_of(model, end, archive.target[rows])[:, -1].to(U.dtype)           # (b, T, n_u)
    return x, join(U, V, T - k, offset=k)


VISIT_ROLLOUTS, VISIT_KEEP = 32, 64  # closed loops run, and states kept, per refresh
TAIL_KEEP = 256  # tail starts added per refresh


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
        self.num_box = len(self.archive)
        self._rings: dict[str, tuple[Tensor, int]] = {}  # ring -> (archive slots, next to overwrite)
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
            A record ``{epoch, starts, improved, mean_cost, box_cost, box_success}`` (also appended to
            ``self.log``); ``box_*`` are over the demonstrations' and fresh starts alone, whose
            number does not change.
        """
        self.epoch = epoch
        cfg = self.config
        if cfg is None or epoch % cfg.every:
            return {}
        archive = self.archive
        if self.visit is not None and cfg.visited_starts:
            self._add_visited(model)
        if cfg.tail_starts:
            rows = torch.randint(0, self.num_box, (min(TAIL_KEEP, cfg.tail_starts),), generator=self._explore_gen)
            x, U = tails(model, archive, rows, self._explore_gen)
            keep = torch.isfinite(x).all(1)
            self._ring_add("tail", cfg.tail_starts, x[keep], U[keep])
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
            base = archive.U.clone() if cfg.explore_best and j % 2 else final
            archive.offer(base + scale * noise, idx)
        for _ in range(cfg.stitch):
            archive.offer(stitched(model, archive, self._explore_gen), idx)
        if cfg.neighbours:
            near = nearest(self.problem.wrap_state(archive.x0), cfg.neighbours)      # (N, m)
            for j in range(near.shape[1]):
                archive.offer(archive.U[near[:, j]].clone(), idx)
        improved = int((archive.cost < before).sum())
        box = torch.arange(self.num_box)
        ok = self.problem.evaluate(archive.x0[box], archive.U[box], archive.target[box])["success"]
        finite = lambda c: float(c[torch.isfinite(c)].mean())  # noqa: E731
        record = {"epoch": epoch, "starts": N, "improved": improved, "mean_cost": finite(archive.cost),
                  "box_cost": finite(archive.cost[box]), "box_success": float(ok.float().mean())}
        self.log.append(record)
        return record

    def state_dict(self) -> dict:
        """The archive and the exploration's random state, for an exact resume."""
        a = self.archive
        return {"x0": a.x0.clone(), "target": a.target.clone(), "U": a.U.clone(), "cost": a.cost.clone(),
                "improved": a.improved, "explore_rng": self._explore_gen.get_state(),
                "rings": {k: (v[0].clone(), v[1]) for k, v in self._rings.items()}, "log": list(self.log)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""
        a = self.archive
        a.x0, a.target, a.U, a.cost = state["x0"], state["target"], state["U"], state["cost"]
        a.improved = state["improved"]
        self._explore_gen.set_state(state["explore_rng"])
        self._rings, self.log = dict(state["rings"]), list(state["log"])

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
        U = plans_of(model, states, self.problem.target_like(states))[:, -1]
        self._ring_add("visited", cfg.visited_starts, states, U)

    def _ring_add(self, ring: str, room: int, x: Tensor, U: Tensor) -> None:
        """Add starts ``x [b, n_x]`` with plans ``U [b, T, n_u]`` to a ring of ``room`` archive slots,
        appending while there is room, then overwriting the oldest."""
        archive = self.archive
        slots, next_slot = self._rings.get(ring, (torch.empty(0, dtype=torch.long), 0))
        target = self.problem.target_like(x)
        free = room - len(slots)
        if free > 0:
            k = min(free, len(x))
            archive.add(x[:k], target[:k], U[:k])
            slots = torch.cat([slots, torch.arange(len(archive) - k, len(archive))])
            x, target, U = x[k:], target[k:], U[k:]
        if len(x):
            pos = (next_slot + torch.arange(len(x))) % len(slots)
            next_slot = int(pos[-1] + 1) % len(slots)
            archive.add(x, target, U, slots[pos])
        self._rings[ring] = (slots, next_slot)


__all__ = ["PlanArchive", "SelfPlayConfig", "SelfPlayData", "closed_loop_visits", "join", "nearest", "plans_of",
           "smooth_noise", "stitched", "tails"]
