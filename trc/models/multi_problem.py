"""One planner for several problems: a shared network that is told which problem it solves.

:class:`MultiProblemTRC` holds one network (:func:`~trc.models.tiny_recursive_control.build_network`)
for problems of equal ``n_x`` and ``n_u`` whose horizons, steps, bounds and costs may differ, and
a learned problem embedding ``e [P, d]``.  For each problem it keeps a
:class:`ProblemPlanner`: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl` of
that problem that shares the network, so everything that takes a single-problem model
(training objectives, self-play, validation, closed loop, halting) takes a planner.  A planner

* encodes a start as the single-problem model does and adds its problem's row of ``e``
  before the normalization: ``z_init = rms_norm(encoder(x0, target) + e[p])``;
* with ``config.problem_conditioning == "hidden"`` (the default) adds its own learned bias
  ``b[p] [hidden]`` to the hidden layer of every network part (encoder, decoders, context, each
  core block; :class:`ProblemBias`), so each problem can turn units of the shared network on and
  off for itself: about 3 % more parameters for four problems.  The shared network then holds
  the pendulum's swing-up beside the other problems, where with the embedding alone one came at
  the others' cost (``benchmarks/multi_problem.py``);
* with ``config.adapter_rank = r > 0`` may have its own low-rank adapter on every Linear layer of the
  shared network (:class:`ProblemAdapter`): ``W x + (x A_p^T) B_p^T`` with ``A_p [r, in]``, ``B_p [out, r]``.
  A problem's adapter is off, and costs nothing, until it is switched on to be tuned
  (:mod:`trc.training.adapter_tuning`: the pendulum's, in closed loop); with ``B_p`` zero at first the
  planner then plans as before, and tuning its own adapter, embedding row and biases changes no other
  problem's plans;
* decodes ``T_max * n_u`` numbers (``T_max``: the longest horizon) and keeps the first
  ``T * n_u`` of its own horizon ``T``, scaled by its own bound ``u_max``;
* feeds back its plan divided by its ``u_max``, zero past ``T``, with the feedback of its own
  problem's simulation (its own :class:`~trc.models.feedback.Observer`, so its own scales).

A batch may mix problems (``forward(x0, problem_ids)``): its rows are grouped by problem and
each group is planned, simulated and refined by its own problem at its own horizon; the plans
come back ``[B, T_max, n_u]``, zero past each row's horizon.  ``plan(x0, problem="pendulum")``
plans for one problem (``[B, T, n_u]`` at that problem's ``T``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from trc.errors import TRCError
from trc.models.config import TRCConfig, preset_config
from trc.models.tiny_recursive_control import TRCOutput, TinyRecursiveControl, build_network
from trc.problems import ControlProblem, get_problem

Tensor = torch.Tensor
PROBLEM_FIELDS = ("state_dim", "control_dim", "control_horizon", "control_bounds")


class ProblemPlanner(TinyRecursiveControl):
    """One problem's planner inside a :class:`MultiProblemTRC`: its problem, scales and horizon,
    the shared network, and its row ``index`` of the shared ``problem_embedding``."""

    def __init__(self, config: TRCConfig, problem: ControlProblem, network: dict[str, nn.Module], index: int):
        super().__init__(config, problem, network)
        self.problem_index = index

    def encode(self, x0: Tensor, target: Tensor) -> Tensor:
        return super().encode(x0, target) + self.problem_embedding.weight[self.problem_index]

    def hidden_bias(self, part: str) -> Tensor | None:
        bias = getattr(self, "problem_bias", None)
        return None if bias is None else bias.table[part][self.problem_index]

    def adapter(self, part: str):
        adapter = getattr(self, "problem_adapter", None)
        return None if adapter is None else adapter.factors(part, self.problem_index)


class ProblemBias(nn.Module):
    """Every problem's own biases on the hidden layers of the shared network: ``table[part]`` is
    ``[P, hidden]`` for the encoder, decoders and context and ``[P, num_layers, hidden]`` for the
    core's blocks.  Zero at first: an untrained model plans as if it had none."""

    PARTS = ("encoder", "initial_decoder", "context", "refine_decoder")

    def __init__(self, problems: int, hidden: int, num_layers: int):
        super().__init__()
        self.table = nn.ParameterDict({part: nn.Parameter(torch.zeros(problems, hidden)) for part in self.PARTS})
        self.table["core"] = nn.Parameter(torch.zeros(problems, num_layers, hidden))


class ProblemAdapter(nn.Module):
    """Every problem's own low-rank adapter on each Linear layer of the shared network.

    For layer ``l`` (``"<part>_0"`` and ``"<part>_2"``, the two Linears of each :class:`MLP` part;
    the core's are ``[P, num_layers, ...]``, one per block) ``down[l]`` holds ``A [P, r, in]``
    and ``up[l]`` ``B [P, out, r]``.  ``A`` is drawn from its own generator (so building an adapter
    draws nothing from torch's global one), ``B`` is zero.  ``enabled [P]`` (a buffer, saved with the
    model) says which problems' adapters act; the others are skipped.
    """

    def __init__(self, problems: int, network: dict[str, nn.Module], rank: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.down, self.up = nn.ParameterDict(), nn.ParameterDict()
        blocks = len(network["core"].blocks)
        for part in ProblemBias.PARTS + ("core",):
            mlp = network[part].blocks[0] if part == "core" else network[part]
            lead = (problems, blocks) if part == "core" else (problems,)
            for i in (0, 2):
                n_in, n_out = mlp[i].in_features, mlp[i].out_features
                A = torch.randn(*lead, rank, n_in, generator=generator) / n_in ** 0.5
                self.down[f"{part}_{i}"] = nn.Parameter(A)
                self.up[f"{part}_{i}"] = nn.Parameter(torch.zeros(*lead, n_out, rank))
        self.register_buffer("enabled", torch.zeros(problems, dtype=torch.bool))

    def factors(self, part: str, problem: int):
        """Problem ``problem``'s adapter on ``part`` as :class:`~trc.models.tiny_recursive_control.MLP` takes it
        (``"core"``: one per block), or None where it is off."""
        if not bool(self.enabled[problem]):
            return None
        pair = [(self.down[f"{part}_{i}"][problem], self.up[f"{part}_{i}"][problem]) for i in (0, 2)]
        if part != "core":
            return tuple(pair)
        (A0, B0), (A2, B2) = pair
        return [((A0[b], B0[b]), (A2[b], B2[b])) for b in range(A0.shape[0])]


class MultiProblemTRC(nn.Module):
    """One network planning for several problems (see the module docstring).

    Args:
        config: a :class:`TRCConfig` whose problem fields (``state_dim`` ...) are unset: each
            problem sets its own.
        problems: the problems (objects or registered names), of equal ``n_x`` and ``n_u``
            and distinct names.

    Attributes:
        problems: the problems, in the order of their ids.
        planners: ``{name: ProblemPlanner}``.
        horizon: ``T_max``, the longest horizon.
        checkpoint_metadata: training facts of the checkpoint it was loaded from (else ``{}``).
    """

    def __init__(self, config: TRCConfig, problems: Sequence[ControlProblem | str]):
        super().__init__()
        problems = [get_problem(p) if isinstance(p, str) else p for p in problems]
        if not problems:
            raise TRCError("a multi-problem model needs at least one problem")
        names = [p.name for p in problems]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise TRCError(f"problem {twice[0]!r} is given twice; each problem once")
        first = problems[0]
        for p in problems[1:]:
            if (p.n_x, p.n_u) != (first.n_x, first.n_u):
                raise TRCError(f"one model plans only for problems of equal dimensions: {first.name!r} has "
                               f"n_x={first.n_x}, n_u={first.n_u} but {p.name!r} has n_x={p.n_x}, n_u={p.n_u}")
        given = [f for f in PROBLEM_FIELDS if getattr(config, f) is not None]
        if given:
            raise TRCError(f"a multi-problem model's config leaves {given[0]} unset: each problem sets its own")
        self.config, self.problems = config, problems
        self.horizon = max(p.horizon for p in problems)
        self.checkpoint_metadata: dict[str, Any] = {}
        network = build_network(config, first.n_x, first.n_u, self.horizon)
        network["problem_embedding"] = nn.Embedding(len(problems), config.latent_dim)
        with torch.no_grad():
            network["problem_embedding"].weight.normal_(0.0, 0.1)
        if config.problem_conditioning == "hidden":
            network["problem_bias"] = ProblemBias(len(problems), config.hidden_dim, config.num_layers)
        if config.adapter_rank:
            network["problem_adapter"] = ProblemAdapter(len(problems), network, config.adapter_rank)
        for name, module in network.items():
            setattr(self, name, module)
        self.planners = {p.name: ProblemPlanner(config, p, network, i) for i, p in enumerate(problems)}
        self.observers = nn.ModuleList(pl.observer for pl in self.planners.values())  # moved with .to()

    @property
    def problem_names(self) -> list[str]:
        return [p.name for p in self.problems]

    @property
    def num_iterations(self) -> int:
        """``K``, the refinement iterations of every planner."""
        return self.config.num_outer_cycles

    def planner(self, problem: str | int | ControlProblem) -> ProblemPlanner:
        """The planner of ``problem`` (its name, its id, or the problem itself)."""
        if isinstance(problem, ControlProblem):
            problem = problem.name
        if isinstance(problem, (int, np.integer)) and not isinstance(problem, bool) \
                and 0 <= problem < len(self.problems):
            return self.planners[self.problems[problem].name]
        if isinstance(problem, str) and problem in self.planners:
            return self.planners[problem]
        raise TRCError(f"this model plans for {', '.join(self.problem_names)}; not for {problem!r}")

    def problem_ids(self, problems: Sequence[str | int]) -> Tensor:
        """Problem ids ``[B]`` (long) of names or ids, one per start."""
        return torch.tensor([self.planner(p).problem_index for p in problems], dtype=torch.long)

    def forward(self, x0: Tensor, problem_ids: Tensor | Sequence[str | int], target: Tensor | None = None,
                return_all_iterations: bool = False, iterations: int | None = None) -> TRCOutput:
        """Plan and refine a batch that may mix problems.

        Args:
            x0: start states ``[B, n_x]``.
            problem_ids: the problem of every start: ids ``[B]`` or names.
            target: ``[B, n_x]``, or None for every problem's own target.
            return_all_iterations, iterations: as in :meth:`TinyRecursiveControl.forward`.

        Returns:
            A :class:`TRCOutput` whose controls are ``[B, T_max, n_u]`` (``all_controls``
            ``[B, K+1, T_max, n_u]``), zero past each row's horizon.
        """
        ids = self._row_ids(problem_ids, x0.shape[0])
        parts = []
        for i in ids.unique().tolist():
            rows = torch.nonzero(ids == i).squeeze(1).to(x0.device)
            out = self.planner(i)(x0[rows], None if target is None else target[rows],
                                  return_all_iterations=return_all_iterations, iterations=iterations)
            parts.append((rows, out))
        merged = {}
        for key in ("controls", "final_latent", "all_controls", "all_latents", "z_H", "z_L"):
            if getattr(parts[0][1], key) is None:
                continue
            time_dim = {"controls": 1, "all_controls": 2}.get(key)
            merged[key] = _scatter([(rows, getattr(out, key)) for rows, out in parts], ids.shape[0],
                                   time_dim, self.horizon)
        return TRCOutput(**merged)

    @torch.no_grad()
    def plan(self, x0, problem: str | int | Sequence[str | int] | None = None, target=None, **kwargs):
        """Bounded controls for start states of one problem, or of one problem per start.

        Args:
            x0: start states ``[B, n_x]`` or one ``[n_x]`` (numpy, list or tensor).
            problem: a problem name (or id): plans ``[B, T, n_u]`` at its horizon ``T``, exactly
                :meth:`TinyRecursiveControl.plan` of its planner; or one name per start:
                plans ``[B, T_max, n_u]``, zero past each start's horizon.
            target, **kwargs: as in :meth:`TinyRecursiveControl.plan` (``halt``,
                ``iterations``, ``return_info`` ...).
        """
        if problem is None:
            raise TRCError(f"this model plans for several problems ({', '.join(self.problem_names)}); "
                           f"pass problem=NAME")
        if isinstance(problem, (str, int, np.integer, ControlProblem)):
            return self.planner(problem).plan(x0, target, **kwargs)
        as_numpy = not torch.is_tensor(x0)
        x = torch.as_tensor(np.asarray(x0) if as_numpy else x0)
        if x.dim() != 2:
            raise TRCError(f"one problem per start needs start states [B, n_x], got shape {list(x.shape)}")
        ids = self._row_ids(problem, x.shape[0])
        tgt = None if target is None else torch.as_tensor(np.asarray(target) if not torch.is_tensor(target) else target)
        info_wanted = kwargs.pop("return_info", False)
        parts, used = [], []
        for i in ids.unique().tolist():
            rows = torch.nonzero(ids == i).squeeze(1)
            t = None if tgt is None or tgt.dim() == 1 else tgt[rows.to(tgt.device)]
            U, info = self.planner(i).plan(x[rows.to(x.device)], tgt if t is None else t, return_info=True, **kwargs)
            parts.append((rows, U))
            used.append((rows, info["iterations"]))
        time_dim = parts[0][1].dim() - 2
        U = _scatter([(r, u.cpu()) for r, u in parts], x.shape[0], time_dim, self.horizon).to(parts[0][1].device)
        its = _scatter([(r, n.cpu()) for r, n in used], x.shape[0], None, self.horizon)
        U, its = (U.numpy(), its.numpy()) if as_numpy else (U, its)
        return (U, {"iterations": its}) if info_wanted else U

    def _row_ids(self, problem_ids, n: int) -> Tensor:
        if torch.is_tensor(problem_ids) or isinstance(problem_ids, np.ndarray):
            ids = torch.as_tensor(problem_ids).long().cpu().flatten()
            bad = ids[(ids < 0) | (ids >= len(self.problems))]
            if len(bad):
                raise TRCError(f"problem id {int(bad[0])} is not one of 0..{len(self.problems) - 1} "
                               f"({', '.join(self.problem_names)})")
        else:
            ids = self.problem_ids(list(problem_ids))
        if ids.shape[0] != n:
            raise TRCError(f"one problem per start: {n} starts but {ids.shape[0]} problems")
        return ids

    def get_parameter_count(self) -> dict[str, int]:
        """Parameters per part and ``total``."""
        counts = {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()
                  if name != "observers"}
        counts["total"] = sum(counts.values())
        return counts

    @classmethod
    def from_preset(cls, name: str, problems: Sequence[ControlProblem | str], **overrides: Any) -> "MultiProblemTRC":
        """A model from preset ``name`` (``trc.models.config.PRESETS``) for ``problems``."""
        return cls(preset_config(name, **overrides), problems)


def _scatter(parts: list[tuple[Tensor, Tensor]], n: int, time_dim: int | None, horizon: int) -> Tensor:
    """Rows ``parts = [(rows, values)]`` put back in batch order; along ``time_dim`` padded with zeros
    to ``horizon``."""
    rows0, first = parts[0]
    shape = list(first.shape)
    shape[0] = n
    if time_dim is not None:
        shape[time_dim] = horizon
    out = first.new_zeros(shape)
    for rows, values in parts:
        index = (rows,) if time_dim is None else (rows,) + (slice(None),) * (time_dim - 1) + (slice(0, values.shape[time_dim]),)
        out[index] = values
    return out


__all__ = ["MultiProblemTRC", "ProblemAdapter", "ProblemBias", "ProblemPlanner"]
