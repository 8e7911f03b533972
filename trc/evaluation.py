"""Refinement evaluation: does each refinement iteration make the plan better?

:class:`RefinementEvaluator` runs a model with all iterations returned, rolls
*every* iterate's controls through the problem's simulator with the control
bound enforced (``problem.evaluate`` clips), and records per sample ``i`` and
iteration ``k = 0..K`` (``k = 0`` is the initial decoder's guess):

==================  ============  =============================================
field               shape         meaning
==================  ============  =============================================
``costs``           ``[N, K+1]``  trajectory cost ``c_ik`` of iterate ``k``
``improvements``    ``[N, K]``    ``c_i,k-1 - c_ik`` (positive = better)
``control_mse``     ``[N, K+1]``  mean squared distance to the expert's controls
``final_errors``    ``[N, K+1]``  ``||x_T - target||``
``success``         ``[N, K+1]``  final error below the problem's tolerance
``expert_costs``    ``[N]``       the dataset's controls, re-simulated
``optimal_costs``   ``[N]``       the optimum, where known (else ``None``)
``cost_ratio``      ``[N, K+1]``  ``c_ik / optimal_costs_i`` (else ``None``)
==================  ============  =============================================

Nothing is taken from the model but its controls.  :func:`analyze_convergence`
condenses the costs into a few numbers, :func:`summarize` adds the final
iterate's success, error and cost ratios, and ``trc analyze`` (:mod:`trc.analyze`) prints both for a
model and a baseline side by side and draws :func:`trc.plots.plot_refinement_curves`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field and derived array (arrays as nested lists)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.update(improvements=self.improvements, cost_ratio=self.cost_ratio, total_reduction=self.total_reduction)
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
    return {
        "pct_samples_improving": 100.0 * float(np.mean(c[:, -1] < c[:, 0])),
        "pct_monotonic": 100.0 * float(np.mean(np.all(drops > 0, axis=1))),
        "pct_never_worse": 100.0 * float(np.mean(np.all(drops >= 0, axis=1))),
        "mean_total_reduction": float(reduction.mean()),
        "median_total_reduction": float(np.median(reduction)),
        "mean_improvement_per_iteration": ((mean_cost[:-1] - mean_cost[1:]) / mean_cost[:-1]).tolist(),
        "convergence_rate": _fit_rate(excess),
        "convergence_rate_of": fitted,
        "num_iterations": metrics.num_iterations,
    }


def summarize(metrics: RefinementMetrics) -> dict[str, Any]:
    """:func:`analyze_convergence` plus the final iterate's quality and per-iteration means.

    Adds ``success_rate`` (% of samples within tolerance), ``mean_final_error``,
    ``mean_cost``, ``cost_over_optimum`` (``mean_i c_iK / mean_i c*_i``, None if no optimum),
    ``cost_over_expert`` (``mean_i c_iK / mean_i`` expert cost), and per iteration ``k = 0..K``
    the lists ``mean_cost_per_iteration``, ``success_rate_per_iteration``,
    ``mean_control_mse_per_iteration``.  Fields the metrics lack are None.
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
        "cost_over_optimum": None if metrics.optimal_costs is None else c_final / metrics.optimal_costs.mean(),
        "cost_over_expert": None if metrics.expert_costs is None else c_final / metrics.expert_costs.mean(),
        "mean_cost_per_iteration": mean(metrics.costs, every),
        "success_rate_per_iteration": mean(metrics.success, every, 100.0),
        "mean_control_mse_per_iteration": mean(metrics.control_mse, every),
    }
    return {**out, **analyze_convergence(metrics)}


def _batches(data: Mapping[str, Any] | Iterable[Mapping[str, Any]], batch_size: int) -> Iterable[Mapping]:
    """Dict batches from a dataset dict (numpy arrays, sliced in order) or a loader (as is)."""
    if not isinstance(data, Mapping):
        yield from data
        return
    if "initial_states" not in data:
        raise TRCError("the test data has no 'initial_states'")
    keys = [k for k in ("initial_states", "target_states", "control_sequences") if k in data]
    for s in range(0, len(data["initial_states"]), batch_size):
        yield {k: torch.as_tensor(np.asarray(data[k][s:s + batch_size])) for k in keys}


class RefinementEvaluator:
    """Measure a model's refinement, iterate by iterate, in the problem's simulator.

    Args:
        model: a :class:`trc.model.TinyRecursiveControl` (anything whose call
            ``model(x0, target, return_all_iterations=True, iterations=K)`` returns
            ``all_controls [B, K+1, T, n_u]``).
        problem: the control problem; defaults to ``model.problem``.
        dynamics_fn: ``(x0 [B, n_x], U [B, T, n_u]) -> X [B, T+1, n_x]`` replacing
            ``problem.rollout`` (for example ``trc.simulate_vanderpol_torch``).
        device: where the model and the simulation run.
        label: the model's name in tables and legends.
    """

    def __init__(self, model: torch.nn.Module, problem=None, dynamics_fn: Callable | None = None,
                 device: str | torch.device = "cpu", label: str = "model") -> None:
        self.model = model.to(device)
        self.problem = problem if problem is not None else model.problem
        self.dynamics_fn = dynamics_fn if dynamics_fn is not None else self.problem.rollout
        self.device = torch.device(device)
        self.label = label

    def simulate(self, x0: Tensor, U: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Clip ``U [B, T, n_u]`` to the bound and simulate it in float64.

        Returns:
            ``(U_clipped, cost [B], final_error [B], success [B])``.
        """
        p = self.problem
        x0, U, target = (t.to(self.device, torch.float64) for t in (x0, U, target))
        U = p.clip(U)
        X = self.dynamics_fn(x0, U)
        return U, p.cost(X, U, target), p.final_error(X, target), p.success(X, target)

    def evaluate(self, data, iterations: int | None = None, optimal_costs: Array | None = None,
                 batch_size: int = 1024) -> RefinementMetrics:
        """Run the model with every iterate returned and measure each one.

        Args:
            data: a dataset dict (``trc.data.load_dataset``) or a loader of dict batches
                (``trc.data.make_loader``), with ``initial_states [N, n_x]`` and optionally
                ``target_states [N, n_x]`` and the expert's ``control_sequences [N, T, n_u]``.
            iterations: refinement iterations K to run (default the model's own; more than
                it was trained with is allowed).
            optimal_costs: optimal cost per sample ``[N]``, in the data's order.  By default
                the re-simulated expert costs serve as the optimum when the dataset dict's
                metadata names the ``optimal`` expert; otherwise no optimum is known.
            batch_size: samples per model call when ``data`` is a dict.

        Returns:
            :class:`RefinementMetrics` with ``N`` samples and ``K+1`` iterates.
        """
        p, model = self.problem, self.model
        dtype = next(model.parameters()).dtype
        parts: dict[str, list[Tensor]] = {}
        training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in _batches(data, batch_size):
                    for name, value in self._evaluate_batch(batch, iterations, dtype).items():
                        parts.setdefault(name, []).append(value.cpu())
        finally:
            model.train(training)
        if not parts:
            raise TRCError("the test data is empty")
        arrays = {k: torch.cat(v).numpy() for k, v in parts.items()}
        if optimal_costs is None and isinstance(data, Mapping) and "expert_costs" in arrays:
            if (data.get("metadata") or {}).get("expert") == "optimal":
                optimal_costs = arrays["expert_costs"]
        if optimal_costs is not None:
            optimal_costs = np.asarray(optimal_costs, dtype=np.float64).reshape(-1)
            if optimal_costs.shape[0] != arrays["costs"].shape[0]:
                raise TRCError(f"got {optimal_costs.shape[0]} optimal costs for "
                               f"{arrays['costs'].shape[0]} test samples")
        meta = getattr(model, "checkpoint_metadata", None) or {}
        return RefinementMetrics(
            **arrays, optimal_costs=optimal_costs, problem=p.name, label=self.label,
            process_weight=meta.get("process_weight"), train_iterations=getattr(model, "num_iterations", None),
        )

    def _evaluate_batch(self, batch: Mapping[str, Tensor], iterations: int | None,
                        dtype: torch.dtype) -> dict[str, Tensor]:
        """Metrics of one batch: ``[B, K+1]`` per iterate, ``[B]`` for the expert."""
        p = self.problem
        x0 = torch.as_tensor(batch["initial_states"]).to(self.device, dtype)
        if x0.ndim != 2 or x0.shape[1] != p.n_x:
            raise TRCError(f"initial states must be [N, {p.n_x}] for problem {p.name!r}, "
                           f"got {list(x0.shape)}")
        target = batch.get("target_states")
        target = p.target_like(x0, None if target is None else torch.as_tensor(target).to(self.device, dtype))
        all_U = self.model(x0, target, return_all_iterations=True, iterations=iterations).all_controls
        B, K1 = all_U.shape[:2]
        if all_U.shape[2:] != (p.horizon, p.n_u):
            raise TRCError(f"the model plans {all_U.shape[2]} steps of {all_U.shape[3]} controls but "
                           f"problem {p.name!r} has horizon {p.horizon} and {p.n_u} controls")
        U, cost, err, ok = self.simulate(x0.repeat_interleave(K1, 0), all_U.flatten(0, 1),
                                         target.repeat_interleave(K1, 0))
        out = {"costs": cost.view(B, K1), "final_errors": err.view(B, K1), "success": ok.view(B, K1)}
        if "control_sequences" in batch:
            U_e = torch.as_tensor(batch["control_sequences"])
            if U_e.shape[1:] != (p.horizon, p.n_u):
                raise TRCError(f"expert controls must be [N, {p.horizon}, {p.n_u}] for problem "
                               f"{p.name!r}, got {list(U_e.shape)}")
            U_e, expert_cost, _, _ = self.simulate(x0, U_e, target)
            out["control_mse"] = (U.view(B, K1, *U.shape[1:]) - U_e[:, None]).square().mean(dim=(2, 3))
            out["expert_costs"] = expert_cost
        return out

    # The seed document calls these as methods.
    def analyze_convergence(self, metrics: RefinementMetrics) -> dict[str, Any]:
        """See :func:`analyze_convergence`."""
        return analyze_convergence(metrics)

    def plot_refinement_curves(self, metrics: RefinementMetrics, output_path=None, **kwargs):
        """See :func:`trc.plots.plot_refinement_curves`."""
        from trc.plots import plot_refinement_curves

        return plot_refinement_curves(metrics, output_path, **kwargs)


def solve_optimal_costs(problem, data: Mapping[str, Any], batch_size: int = 1024) -> Array:
    """The optimal cost per sample of a dataset dict, solved with ``trc.experts.optimal_controls``.

    Returns:
        ``[N]`` float64, in the data's order (pass it to :meth:`RefinementEvaluator.evaluate`).
    """
    from trc.experts import optimal_controls

    out = []
    for batch in _batches(data, batch_size):
        x0 = torch.as_tensor(batch["initial_states"], dtype=torch.float64)
        target = problem.target_like(x0, batch.get("target_states"))
        out.append(problem.evaluate(x0, optimal_controls(problem, x0, target), target)["cost"])
    return torch.cat(out).numpy()


def format_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """A compact text table with one column per model (from :func:`summarize`)."""
    rows = [("success (%)", "success_rate", "{:.1f}"), ("final error", "mean_final_error", "{:.4f}"),
            ("cost / optimum", "cost_over_optimum", "{:.4f}"), ("cost / expert", "cost_over_expert", "{:.4f}"),
            ("improving (%)", "pct_samples_improving", "{:.1f}"), ("monotonic (%)", "pct_monotonic", "{:.1f}"),
            ("never worse (%)", "pct_never_worse", "{:.1f}"),
            ("convergence rate", "convergence_rate", "{:.3f}")]
    K = max(len(s["mean_cost_per_iteration"]) for s in summaries.values())
    lines = [[""] + list(summaries)]
    for name, key, fmt in rows:
        lines.append([name] + ["-" if s[key] is None else fmt.format(s[key]) for s in summaries.values()])
    for k in range(K):
        lines.append([f"mean cost, k={k}"] + [
            f"{s['mean_cost_per_iteration'][k]:.4g}" if k < len(s["mean_cost_per_iteration"]) else ""
            for s in summaries.values()])
    widths = [max(len(line[j]) for line in lines) for j in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in
                               enumerate(zip(line, widths))) for line in lines)
