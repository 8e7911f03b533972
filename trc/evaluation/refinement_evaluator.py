"""Refinement evaluation: does each refinement iteration make the plan better?

:class:`RefinementEvaluator` runs a model with all iterations returned, rolls
*every* iterate's controls through the problem's simulator with the control
bound enforced (``problem.clip``, then the evaluator's simulator: the problem's rollout or a
``dynamics_fn``), and records per sample ``i`` and
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
``halt_iterations`` ``[N]``       a halting model: iterations each start used
``halting_costs``   ``[N]``       a halting model: cost of the plan it halted with
==================  ============  =============================================

Nothing is taken from the model but its controls.  :func:`analyze_convergence`
condenses the costs into a few numbers, :func:`summarize` adds the final
iterate's success, error and cost ratios, and ``trc analyze`` (:mod:`trc.evaluation.analyze`) prints both for a
model and a baseline side by side and draws :func:`trc.evaluation.plots.plot_refinement_curves`.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from trc.data.datasets import as_batch
from trc.errors import TRCError, check
from trc.io import check_device
from trc.evaluation.metrics import RefinementMetrics, analyze_convergence
from trc.problems import get_problem
from trc.simulator import simulated_by, simulator

Tensor = torch.Tensor
Array = np.ndarray


def _batches(data: Mapping[str, Any] | Iterable[Any], batch_size: int, problem) -> Iterable[Mapping]:
    """Dict batches from a dataset dict (numpy arrays, sliced in order) or a loader (see ``as_batch``)."""
    check("batch_size", batch_size)
    if not isinstance(data, Mapping):
        for batch in data:
            yield as_batch(batch, problem)
        return
    if "initial_states" not in data:
        raise TRCError("the test data has no 'initial_states'")
    keys = [k for k in ("initial_states", "target_states", "control_sequences") if k in data]
    for s in range(0, len(data["initial_states"]), batch_size):
        yield {k: torch.as_tensor(np.asarray(data[k][s:s + batch_size])) for k in keys}


class RefinementEvaluator:
    """Measure a model's refinement, iterate by iterate, in the problem's simulator.

    Args:
        model: a :class:`trc.models.tiny_recursive_control.TinyRecursiveControl` (anything whose call
            ``model(x0, target, return_all_iterations=True, iterations=K)`` returns
            ``all_controls [B, K+1, T, n_u]``).
        problem: the control problem, an object or a name for ``trc.get_problem``; defaults to
            ``model.problem``.
        dynamics_fn: ``(x0 [B, n_x], U [B, T, n_u]) -> X [B, T+1, n_x]`` replacing
            ``problem.rollout`` (for example ``trc.simulate_vanderpol_torch``), in the evaluation
            and in the model's own feedback.
        cost_params: ``Q``, ``R``, ``Q_final`` (any of them) replacing the problem's, likewise.
        device: where the model and the simulation run (an unknown or absent device is a ``TRCError``).
        label: the model's name in tables and legends.
    """

    def __init__(self, model: torch.nn.Module, problem=None, dynamics_fn: Callable | None = None,
                 device: str | torch.device = "cpu", label: str = "model",
                 cost_params: Mapping | None = None) -> None:
        if hasattr(model, "planners"):   # a multi-problem model: the planner of the problem named
            if problem is None:
                raise TRCError(f"this model plans for several problems ({', '.join(model.problem_names)}); "
                               f"pass problem=NAME")
            model = model.planner(problem)
            problem = None if isinstance(problem, str) else problem   # by name: the planner's own problem
        if isinstance(problem, str):
            problem = get_problem(problem)
        own = getattr(model, "problem", None)
        if problem is not None and own is not None and own.name != problem.name:
            raise TRCError(f"the model was trained on problem {own.name!r}, not {problem.name!r}")
        if problem is None and own is None:
            raise TRCError("the evaluator needs a problem: pass problem= (a name or a ControlProblem)")
        self.problem = problem if problem is not None else model.problem
        self.simulator = simulator(self.problem, dynamics_fn, cost_params)
        self.device = check_device(device)
        self.model = model.to(self.device)
        self.label = label

    def simulate(self, x0: Tensor, U: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Clip ``U [B, T, n_u]`` to the bound and simulate it in float64.

        Returns:
            ``(U_clipped, cost [B], final_error [B], success [B])``.
        """
        p, sim = self.problem, self.simulator
        x0, U, target = (t.to(self.device, torch.float64) for t in (x0, U, target))
        U = p.clip(U)
        X = sim.rollout(x0, U)
        return U, sim.cost(X, U, target), p.final_error(X, target), p.success(X, target)

    def evaluate(self, data, iterations: int | None = None, optimal_costs: Array | None = None,
                 batch_size: int = 1024) -> RefinementMetrics:
        """Run the model with every iterate returned and measure each one.

        Args:
            data: a dataset dict (``trc.data.datasets.load_dataset``) or a loader of batches
                (dicts as ``trc.data.datasets.make_loader`` yields, or tuples ``(x0, U)``,
                ``(x0, target, U)``: :func:`trc.data.datasets.as_batch`), with ``initial_states
                [N, n_x]`` and optionally ``target_states [N, n_x]`` and the expert's
                ``control_sequences [N, T, n_u]``.
            iterations: refinement iterations K to run (default the model's own; more than
                it was trained with is allowed).
            optimal_costs: optimal cost per sample ``[N]``, in the data's order.  By default
                the re-simulated expert costs serve as the optimum when the dataset dict's
                metadata names the ``optimal`` expert; otherwise no optimum is known.
            batch_size: samples per model call when ``data`` is a dict (a positive integer).

        Returns:
            :class:`RefinementMetrics` with ``N`` samples and ``K+1`` iterates.

        Raises:
            TRCError: among others when a plan's simulation diverges (a start far outside the
                problem's box): its metrics would be NaN, so the sample is named instead.
        """
        p, model = self.problem, self.model
        dtype = next(model.parameters()).dtype
        parts: dict[str, list[Tensor]] = {}
        training = model.training
        model.eval()
        seen = 0
        try:
            with torch.no_grad(), simulated_by(model, self.simulator):
                for batch in _batches(data, batch_size, p):
                    out = self._evaluate_batch(batch, iterations, dtype)
                    self._check_finite(out, batch, seen)
                    seen += out["costs"].shape[0]
                    for name, value in out.items():
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
        final_only = bool(meta.get("final_only"))  # the seed's baseline: no λ to show
        return RefinementMetrics(
            **arrays, optimal_costs=optimal_costs, problem=p.name,
            label=f"{self.label} (BC, final only)" if final_only else self.label,
            process_weight=None if final_only else meta.get("process_weight"),
            train_iterations=getattr(model, "num_iterations", None),
        )

    def _check_finite(self, out: Mapping[str, Tensor], batch: Mapping[str, Tensor], offset: int) -> None:
        """Refuse, in one sentence, a batch where a simulated plan diverged (no NaN reaches the metrics)."""
        for key, whose in (("costs", "the model's plans"), ("expert_costs", "the expert's controls")):
            if key not in out:
                continue
            bad = ~torch.isfinite(out[key].reshape(out[key].shape[0], -1)).all(1)
            if bad.any():
                i = int(bad.nonzero()[0])
                x0 = [round(float(v), 4) for v in torch.as_tensor(batch["initial_states"])[i]]
                p = self.problem
                inside = all(lo <= v <= hi for v, lo, hi in zip(x0, p.x0_low, p.x0_high))
                advice = ("from inside it: the controls drive the system away" if inside
                          else "remove such starts from the test data")
                raise TRCError(f"the simulation of {whose} diverges (non-finite states) for {int(bad.sum())} "
                               f"test start(s), first sample {offset + i} at x0 = {x0}; problem {p.name!r} "
                               f"starts in {p.start_box}: {advice}")

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
        halting = {}
        if getattr(getattr(self.model, "config", None), "use_halting", False):  # also as it plans: halting
            U_halt, used = self.model.plan_halting(x0, target, iterations)
            halting = {"halt_iterations": used, "halting_costs": self.simulate(x0, U_halt, target)[1]}
        B, K1 = all_U.shape[:2]
        if all_U.shape[2:] != (p.horizon, p.n_u):
            raise TRCError(f"the model plans {all_U.shape[2]} steps of {all_U.shape[3]} controls but "
                           f"problem {p.name!r} has horizon {p.horizon} and {p.n_u} controls")
        U, cost, err, ok = self.simulate(x0.repeat_interleave(K1, 0), all_U.flatten(0, 1),
                                         target.repeat_interleave(K1, 0))
        out = {"costs": cost.view(B, K1), "final_errors": err.view(B, K1), "success": ok.view(B, K1), **halting}
        if "control_sequences" in batch:
            U_e = torch.as_tensor(batch["control_sequences"])
            if U_e.shape[1:] != (p.horizon, p.n_u):
                raise TRCError(f"expert controls must be [N, {p.horizon}, {p.n_u}] for problem "
                               f"{p.name!r}, got {list(U_e.shape)}")
            U_e, expert_cost, _, _ = self.simulate(x0, U_e, target)
            out["control_mse"] = (U.view(B, K1, *U.shape[1:]) - U_e[:, None]).square().mean(dim=(2, 3))
            out["expert_costs"] = expert_cost
        return out

    def closed_loop(self, data, replan_every: int = 1, batch_size: int = 1024, iterations: int | None = None,
                    halt: bool | str | None = False):
        """Run the model as a receding-horizon controller from the data's starts.

        See :func:`trc.evaluation.closed_loop.closed_loop` (``iterations``, ``halt``: each plan's
        refinement, as there); ``data`` is a dataset dict or a loader as for :meth:`evaluate`.
        The plant is the evaluator's simulator (its ``dynamics_fn`` one step at a time, and its
        ``cost_params``).

        Returns:
            One :class:`~trc.evaluation.closed_loop.ClosedLoopResult` over all ``N`` starts.
        """
        from trc.evaluation.closed_loop import ClosedLoopResult, closed_loop

        parts = []
        with simulated_by(self.model, self.simulator):
            for batch in _batches(data, batch_size, self.problem):
                x0 = torch.as_tensor(batch["initial_states"]).to(self.device, torch.float64)
                target = batch.get("target_states")
                parts.append(closed_loop(self.model, x0, replan_every, problem=self.simulator,
                                         target=None if target is None else torch.as_tensor(target).to(x0),
                                         iterations=iterations, halt=halt))
        if not parts:
            raise TRCError("the test data is empty")
        cat = {k: torch.cat([getattr(r, k) for r in parts]) for k in ("X", "U", "cost", "final_error", "success")}
        return ClosedLoopResult(**cat, replan_every=replan_every, plans=sum(r.plans for r in parts))

    # The seed document calls these as methods.
    def analyze_convergence(self, metrics: RefinementMetrics) -> dict[str, Any]:
        """See :func:`analyze_convergence`."""
        return analyze_convergence(metrics)

    def plot_refinement_curves(self, metrics: RefinementMetrics, output_path=None, **kwargs):
        """See :func:`trc.evaluation.plots.plot_refinement_curves`."""
        from trc.evaluation.plots import plot_refinement_curves

        return plot_refinement_curves(metrics, output_path, **kwargs)


def solve_optimal_costs(problem, data: Mapping[str, Any], batch_size: int = 1024) -> Array:
    """The optimal cost per sample of a dataset dict, solved with ``trc.data.experts.optimal_controls``.

    Returns:
        ``[N]`` float64, in the data's order (pass it to :meth:`RefinementEvaluator.evaluate`).
    """
    from trc.data.experts import optimal_controls

    out = []
    for batch in _batches(data, batch_size, problem):
        x0 = torch.as_tensor(batch["initial_states"], dtype=torch.float64)
        target = problem.target_like(x0, batch.get("target_states"))
        out.append(problem.evaluate(x0, optimal_controls(problem, x0, target), target)["cost"])
    return torch.cat(out).numpy()
