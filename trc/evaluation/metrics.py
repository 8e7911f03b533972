"""Refinement metrics: per-sample, per-iteration costs and what they add up to.

:class:`RefinementMetrics` holds what :class:`~trc.evaluation.refinement_evaluator.RefinementEvaluator`
measured (the table of fields is in that module's docstring); :func:`analyze_convergence`
condenses the costs into a few numbers, :func:`summarize` adds the final iterate's success,
error and cost ratios, and :func:`format_table` prints summaries side by side.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from trc.errors import TRCError

Tensor = torch.Tensor
Array = np.ndarray


@dataclass
class RefinementMetrics:
    """Per-sample, per-iteration metrics of one model on one test set (see module docstring).

    Only ``costs`` is required, so that synthetic cost curves can be analysed and plotted.
    """

    costs: Array
    final_errors: Array | None = None
    success: Array | None = None
    control_mse: Array | None = None
    expert_costs: Array | None = None
    optimal_costs: Array | None = None
    problem: str = ""
    label: str = "model"
    process_weight: float | None = None
    train_iterations: int | None = None
    halt_iterations: Array | None = None   # [N] iterations each start used when the model halts
    halting_costs: Array | None = None     # [N] cost of the plan it halted with

    def __post_init__(self) -> None:
        self.costs = np.asarray(self.costs, dtype=np.float64)
        if self.costs.ndim != 2 or self.costs.shape[1] < 2:
            raise TRCError(f"costs must be [N, K+1] with K >= 1 refinement iterations, got shape "
                           f"{tuple(self.costs.shape)}")

    @property
    def num_iterations(self) -> int:
        """K, the number of refinement iterations evaluated."""
        return self.costs.shape[1] - 1

    @property
    def display_name(self) -> str:
        """The label with the process-supervision weight, e.g. ``"PS (λ = 1)"``."""
        return self.label if self.process_weight is None else f"{self.label} (λ = {self.process_weight:g})"

    @property
    def improvements(self) -> Array:
        """``c_i,k-1 - c_ik`` per sample and iteration ``k = 1..K``, ``[N, K]``."""
        return self.costs[:, :-1] - self.costs[:, 1:]

    @property
    def total_reduction(self) -> Array:
        """Each sample's relative total reduction ``(c_i0 - c_iK) / c_i0``, ``[N]`` (0.3 = 30% cheaper)."""
        c = self.costs
        return (c[:, 0] - c[:, -1]) / np.maximum(c[:, 0], np.finfo(float).tiny)

    @property
    def cost_ratio(self) -> Array | None:
        """``c_ik / optimal_costs_i``, ``[N, K+1]``, or None when no optimum is known."""
        return None if self.optimal_costs is None else self.costs / self.optimal_costs[:, None]

    # -- the seed document's names for the same numbers -----------------------------------
    @property
    def iteration_costs(self) -> Array:
        """The seed's name for :attr:`costs`, ``[N, K+1]``."""
        return self.costs

    @property
    def iteration_improvements(self) -> Array:
        """The seed's name for :attr:`improvements`, ``[N, K]``."""
        return self.improvements

    @property
    def control_mse_per_iteration(self) -> Array | None:
        """Mean control MSE to the expert per iterate, ``[K+1]`` (None without expert controls)."""
        return None if self.control_mse is None else np.asarray(self.control_mse).mean(axis=0)

    @property
    def avg_costs_per_iteration(self) -> Array:
        """Mean cost per iterate, ``[K+1]``."""
        return self.costs.mean(axis=0)

    @property
    def std_costs_per_iteration(self) -> Array:
        """Standard deviation of the cost per iterate, ``[K+1]``."""
        return self.costs.std(axis=0)

    @property
    def initial_cost(self) -> float:
        """Mean cost of the first guess ``U_0``."""
        return float(self.costs[:, 0].mean())

    @property
    def final_cost(self) -> float:
        """Mean cost of the last iterate ``U_K``."""
        return float(self.costs[:, -1].mean())

    @property
    def avg_cost_reduction(self) -> float:
        """Mean absolute cost reduction from the first guess to the last iterate, ``mean_i (c_i0 - c_iK)``."""
        return float((self.costs[:, 0] - self.costs[:, -1]).mean())

    @property
    def avg_convergence_rate(self) -> float:
        """Mean absolute improvement per iteration, ``mean_ik (c_i,k-1 - c_ik)`` (the seed's definition)."""
        return float(self.improvements.mean())

    SEED_NAMES = ("iteration_costs", "iteration_improvements", "control_mse_per_iteration",
                  "avg_costs_per_iteration", "std_costs_per_iteration", "initial_cost", "final_cost",
                  "avg_cost_reduction", "avg_convergence_rate")
    DERIVED = ("num_iterations", "improvements", "total_reduction", "cost_ratio")

    def keys(self) -> tuple[str, ...]:
        """What ``metrics[key]`` serves: the fields, the derived arrays and the seed's names."""
        return (*(f.name for f in dataclasses.fields(self)), *self.DERIVED, *self.SEED_NAMES)

    def __getitem__(self, key: str) -> Any:
        """``metrics["iteration_costs"]`` as the seed's code reads it; the same as the attribute."""
        if key not in self.keys():
            raise KeyError(f"{key!r}; RefinementMetrics has {', '.join(self.keys())}")
        return getattr(self, key)
    @property
    def halting_histogram(self) -> Array | None:
        """How many starts halted after ``k = 1..K`` iterations, ``[K]`` ints (None without halting)."""
        if self.halt_iterations is None:
            return None
        return np.bincount(np.asarray(self.halt_iterations, dtype=np.int64),
                           minlength=self.num_iterations + 1)[1:self.num_iterations + 1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field and derived array (arrays as nested lists)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(improvements=self.improvements, cost_ratio=self.cost_ratio, total_reduction=self.total_reduction,
             halting_histogram=self.halting_histogram)
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in d.items()}


def _fit_rate(values: Array) -> float:
    """``exp`` of the least-squares slope of ``log(values)`` over their index (positive ones only)."""
    k = np.flatnonzero(values > 0)
    if k.size < 2:
        return float("nan")
    return float(np.exp(np.polyfit(k, np.log(values[k]), 1)[0]))


def analyze_convergence(metrics: RefinementMetrics) -> dict[str, Any]:
    """Condense the per-iteration costs ``c_ik`` (``k = 0..K``) into convergence figures.

    Returns a dict with:

    - ``pct_samples_improving``: % of samples whose cost fell overall, ``c_iK < c_i0``.
    - ``pct_monotonic``: % of samples whose cost fell at every iteration, ``c_ik < c_i,k-1``
      for all ``k = 1..K`` (strictly: a sample whose cost stands still is not monotonic).
    - ``pct_never_worse``: % of samples whose cost never rose, ``c_ik <= c_i,k-1`` for all ``k``.
    - ``mean_total_reduction``, ``median_total_reduction``: mean and median over samples of the
      relative total reduction ``r_i = (c_i0 - c_iK) / c_i0`` (a fraction: 0.3 means the final
      plan costs 30% less than the first guess; negative means it got worse).
    - ``mean_improvement_per_iteration``: list over ``k = 1..K`` of the relative fall of the
      mean cost, ``(m_{k-1} - m_k) / m_{k-1}`` with ``m_k = mean_i c_ik``.
    - ``convergence_rate``: the factor ``rho`` of a geometric decay ``e_k ~ a rho^k`` fitted by
      least squares to ``log e_k`` over ``k = 0..K``, where ``e_k = mean_i (c_ik - c*_i)`` is
      the mean excess cost over the optimum when one is known (``metrics.optimal_costs``) and
      ``e_k = m_k`` otherwise; only iterations with ``e_k > 0`` enter the fit (NaN if fewer
      than two).  ``rho < 1`` means the cost converges, ``1 - rho`` is the fraction of the
      (excess) cost removed per iteration; for exact ``e_k = a rho^k`` the fit returns ``rho``.
    - ``convergence_rate_of``: ``"excess_cost"`` or ``"cost"``, saying which ``e_k`` was fitted.
    - ``convergence_tau``: the same decay as a time constant in iterations, ``e_k ~ a exp(-k / tau)``,
      ``tau = -1 / log(rho)`` (NaN unless ``0 < rho < 1``).
    - ``improvement_rate_per_iter``: list over ``k = 1..K`` of the fraction of samples whose cost
      fell at iteration ``k`` (the seed's key).
    - ``num_iterations``: K.
    """
    c = metrics.costs
    drops = metrics.improvements
    mean_cost = c.mean(axis=0)
    reduction = metrics.total_reduction
    if metrics.optimal_costs is not None:
        excess, fitted = mean_cost - metrics.optimal_costs.mean(), "excess_cost"
    else:
        excess, fitted = mean_cost, "cost"
    rate = _fit_rate(excess)
    return {
        "pct_samples_improving": 100.0 * float(np.mean(c[:, -1] < c[:, 0])),
        "pct_monotonic": 100.0 * float(np.mean(np.all(drops > 0, axis=1))),
        "pct_never_worse": 100.0 * float(np.mean(np.all(drops >= 0, axis=1))),
        "mean_total_reduction": float(reduction.mean()),
        "median_total_reduction": float(np.median(reduction)),
        "mean_improvement_per_iteration": ((mean_cost[:-1] - mean_cost[1:]) / mean_cost[:-1]).tolist(),
        "convergence_rate": rate,
        "convergence_rate_of": fitted,
        "convergence_tau": -1.0 / math.log(rate) if 0 < rate < 1 else math.nan,
        "improvement_rate_per_iter": np.mean(drops > 0, axis=0).tolist(),
        "num_iterations": metrics.num_iterations,
    }


def summarize(metrics: RefinementMetrics) -> dict[str, Any]:
    """:func:`analyze_convergence` plus the final iterate's quality and per-iteration means.

    Adds ``success_rate`` (% of samples within tolerance), ``mean_final_error``,
    ``mean_cost``, ``cost_over_optimum`` (``mean_i c_iK / mean_i c*_i``, None if no optimum),
    ``cost_over_expert`` (``mean_i c_iK / mean_i`` expert cost; None if that mean is not positive), and per iteration ``k = 0..K``
    the lists ``mean_cost_per_iteration``, ``success_rate_per_iteration``,
    ``mean_control_mse_per_iteration``.  Fields the metrics lack are None.

    For a halting model: ``mean_iterations`` (used at halting), ``halting_histogram`` (starts
    halted after ``k = 1..K``), ``halting_cost_over_optimum`` and ``cost_at_halting_over_full``
    (mean cost at halting over mean cost after all ``K`` iterations); None otherwise.
    """
    def mean(a: Array | None, k: int | slice = -1, scale: float = 1.0) -> Any:
        if a is None:
            return None
        m = scale * np.asarray(a, dtype=np.float64)[:, k].mean(axis=0)
        return m.tolist() if isinstance(k, slice) else float(m)

    c_final = float(metrics.costs[:, -1].mean())
    every = slice(None)
    out = {
        "success_rate": mean(metrics.success, scale=100.0),
        "mean_final_error": mean(metrics.final_errors),
        "mean_cost": c_final,
        "cost_over_optimum": _ratio(c_final, metrics.optimal_costs),
        "cost_over_expert": _ratio(c_final, metrics.expert_costs),
        "mean_cost_per_iteration": mean(metrics.costs, every),
        "success_rate_per_iteration": mean(metrics.success, every, 100.0),
        "mean_control_mse_per_iteration": mean(metrics.control_mse, every),
        "mean_iterations": None, "halting_histogram": None, "halting_cost_over_optimum": None,
        "cost_at_halting_over_full": None,
    }
    if metrics.halt_iterations is not None:
        halted = float(np.mean(metrics.halting_costs))
        out.update(mean_iterations=float(np.mean(metrics.halt_iterations)),
                   halting_histogram=metrics.halting_histogram.tolist(),
                   halting_cost_over_optimum=None if metrics.optimal_costs is None
                   else halted / metrics.optimal_costs.mean(),
                   cost_at_halting_over_full=halted / c_final)
    return {**out, **analyze_convergence(metrics)}


def _ratio(cost: float, reference: Array | None) -> float | None:
    """``cost / mean(reference)``, or None without a reference or when its mean is not positive (all-zero costs)."""
    if reference is None:
        return None
    mean = float(np.mean(reference))
    return cost / mean if mean > 0 else None


def format_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """A compact text table with one column per model (from :func:`summarize`).

    A summary with a ``closed_loop`` entry (:meth:`~trc.evaluation.closed_loop.ClosedLoopResult.summary`)
    adds the closed loop's success, final error and cost ratios below the open-loop ones.
    """
    rows = [("success (%)", "success_rate", "{:.1f}"), ("final error", "mean_final_error", "{:.4f}"),
            ("cost / optimum", "cost_over_optimum", "{:.4f}"), ("cost / expert", "cost_over_expert", "{:.4f}"),
            ("improving (%)", "pct_samples_improving", "{:.1f}"), ("monotonic (%)", "pct_monotonic", "{:.1f}"),
            ("never worse (%)", "pct_never_worse", "{:.1f}"),
            ("convergence rate", "convergence_rate", "{:.3f}"),
            ("iterations at halting", "mean_iterations", "{:.2f}"),
            ("halted cost / optimum", "halting_cost_over_optimum", "{:.4f}"),
            ("halted cost / all K", "cost_at_halting_over_full", "{:.5f}")]
    if any("closed_loop" in s for s in summaries.values()):  # trc analyze --closed_loop
        rows += [(f"closed loop: {name}", ("closed_loop", key), fmt) for name, key, fmt in rows[:4]]
    K = max(len(s["mean_cost_per_iteration"]) for s in summaries.values())
    lines = [[""] + list(summaries)]
    def get(s, key):
        return (s.get(key[0]) or {}).get(key[1]) if isinstance(key, tuple) else s.get(key)
    for name, key, fmt in rows:
        lines.append([name] + ["-" if get(s, key) is None else fmt.format(get(s, key)) for s in summaries.values()])
    for k in range(K):
        lines.append([f"mean cost, k={k}"] + [
            f"{s['mean_cost_per_iteration'][k]:.4g}" if k < len(s["mean_cost_per_iteration"]) else ""
            for s in summaries.values()])
    for k in range(1, K):
        if any(s.get("halting_histogram") for s in summaries.values()):
            lines.append([f"halted after k={k}"] + [
                str(s["halting_histogram"][k - 1]) if s.get("halting_histogram") and k <= len(s["halting_histogram"])
                else "-" for s in summaries.values()])
    widths = [max(len(line[j]) for line in lines) for j in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in
                               enumerate(zip(line, widths))) for line in lines)
