"""Widgets of the book: explore a model's refinement iterations, and a sweep over λ.

Both widgets follow one pattern.  Explicit controls (sliders) call
:meth:`update` through ``.observe``; ``update`` redraws a matplotlib
:class:`~matplotlib.figure.Figure` (object API, no pyplot state) and shows it
in an ``ipywidgets.Output``.  A notebook displays ``.widget``.  The callbacks
run only in a live kernel, so the built book shows ``static_figure()`` beside
each widget: the same content, drawn once for every setting at the same time.

* :class:`IterationExplorer`: sliders for the start state ``x0`` (one per
  state, within the problem's start box) and the iteration ``k``; shows the
  trajectory of iterate ``k`` in the phase plane and its controls against the
  optimum (:func:`trc.data.experts.optimal_controls`, solved once per ``x0``).
* :class:`LambdaExplorer`: a selection slider over the λ of a sweep; shows
  success and cost ratio for every λ, the chosen one highlighted, and its
  mean cost per refinement iteration against a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import display
from matplotlib.figure import Figure

from trc.errors import TRCError
from trc.evaluation.plots import BASELINE_COLOR, MODEL_COLOR, plot_controls, plot_iterates, plot_phase_portrait

Tensor = torch.Tensor


def _show(output: widgets.Output, fig: Figure) -> None:
    """Replace what ``output`` shows with ``fig`` (in a kernel; elsewhere only the figure is redrawn)."""
    from IPython import get_ipython

    if get_ipython() is None:
        return
    with output:
        output.clear_output(wait=True)
        display(fig)


# -- the iteration explorer ------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """Controls and what they do from one start state, in float64 numpy.

    With ``J`` plans (``J = K+1`` iterates, or 1 for the optimum):
    ``U [J, T, n_u]`` (clipped), ``X [J, T+1, n_x]``, ``cost [J]``, ``final_error [J]``, ``success [J]``.
    """

    U: np.ndarray
    X: np.ndarray
    cost: np.ndarray
    final_error: np.ndarray
    success: np.ndarray


def simulate(problem, x0: Sequence[float], U: Tensor) -> Rollout:
    """Simulate the plans ``U [J, T, n_u]`` from one start state ``x0 [n_x]`` in float64."""
    U = U.detach().to(torch.float64)
    x = torch.as_tensor(x0, dtype=torch.float64).expand(U.shape[0], -1)
    ev = problem.evaluate(x, U)
    return Rollout(problem.clip(U).numpy(), ev["X"].numpy(), ev["cost"].numpy(),
                   ev["final_error"].numpy(), ev["success"].numpy())


class IterationExplorer:
    """Sliders for ``x0`` and ``k``; the phase portrait and controls of iterate ``k`` against the optimum.

    Args:
        model: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl`; ``model.problem`` supplies the box,
            bound, simulator and cost.
        x0: the first start state ``[n_x]`` (default halfway from the box's centre to its upper corner).
        k: the first iteration shown (default the last, ``K``).
        iterations: refinement iterations to run (default the model's ``K``).
        step: slider step of the start state.
        optimal_config: :class:`trc.data.experts.OptimalConfig` of the optimum.

    Attributes:
        widget: what a notebook displays (sliders, a one-line report, the figure).
        x0_sliders: one ``FloatSlider`` per state; ``k_slider``: an ``IntSlider`` over ``0..K``.
        figure: the figure that :meth:`update` redraws; ``report``: its one-line ``HTML`` summary.
    """

    def __init__(self, model, x0: Sequence[float] | None = None, k: int | None = None,
                 iterations: int | None = None, step: float = 0.1, optimal_config=None) -> None:
        self.model, self.problem = model, model.problem
        p = self.problem
        self.K = model.num_iterations if iterations is None else int(iterations)
        if self.K < 0:
            raise TRCError(f"iterations must be >= 0, got {iterations}")
        low, high = np.asarray(p.x0_low, dtype=float), np.asarray(p.x0_high, dtype=float)
        x0 = (low + 3 * high) / 4 if x0 is None else np.asarray(x0, dtype=float)
        if x0.shape != (p.n_x,):
            raise TRCError(f"x0 must have {p.n_x} entries for problem {p.name!r}, got shape {list(x0.shape)}")
        if np.any(x0 < low) or np.any(x0 > high):
            raise TRCError(f"x0 {x0.tolist()} lies outside the start box of problem {p.name!r} "
                           f"({list(p.x0_low)} to {list(p.x0_high)})")
        k = self.K if k is None else int(k)
        if not 0 <= k <= self.K:
            raise TRCError(f"k must be an iteration in 0..{self.K}, got {k}")
        self.optimal_config = optimal_config
        self._plans: dict[tuple[float, ...], Rollout] = {}
        self._optima: dict[tuple[float, ...], Rollout] = {}
        self.x0_sliders = [widgets.FloatSlider(value=float(v), min=float(lo), max=float(hi), step=step,
                                               description=f"x{i + 1}(0)", continuous_update=False,
                                               readout_format=".2f")
                           for i, (v, lo, hi) in enumerate(zip(x0, low, high))]
        self.k_slider = widgets.IntSlider(value=k, min=0, max=self.K, description="iteration k",
                                          continuous_update=False)
        self.report = widgets.HTML()
        self.output = widgets.Output()
        self.figure = Figure(figsize=(11, 4.2), layout="constrained")
        for slider in (*self.x0_sliders, self.k_slider):
            slider.observe(self._changed, names="value")
        self.widget = widgets.VBox([widgets.HBox([*self.x0_sliders, self.k_slider]), self.report, self.output])
        self.update()

    @property
    def x0(self) -> tuple[float, ...]:
        """The start state the sliders set, rounded to 9 decimals (the cache key)."""
        return tuple(round(float(s.value), 9) for s in self.x0_sliders)

    @property
    def k(self) -> int:
        """The iteration the slider sets."""
        return int(self.k_slider.value)

    def plan(self, x0: Sequence[float] | None = None) -> Rollout:
        """Every iterate ``k = 0..K`` of the model's plan from ``x0`` (default the sliders'), cached."""
        key = self.x0 if x0 is None else tuple(round(float(v), 9) for v in x0)
        if key not in self._plans:
            dtype = next(self.model.parameters()).dtype
            training = self.model.training
            self.model.eval()
            try:
                with torch.no_grad():
                    out = self.model(torch.tensor([key], dtype=dtype), return_all_iterations=True,
                                     iterations=self.K)
            finally:
                self.model.train(training)
            self._plans[key] = simulate(self.problem, key, out.all_controls[0])
        return self._plans[key]

    def optimum(self, x0: Sequence[float] | None = None) -> Rollout:
        """The optimum from ``x0`` (default the sliders'), solved on the first request and cached."""
        from trc.data.experts import optimal_controls

        key = self.x0 if x0 is None else tuple(round(float(v), 9) for v in x0)
        if key not in self._optima:
            x = torch.tensor([key], dtype=torch.float64)
            self._optima[key] = simulate(self.problem, key, optimal_controls(self.problem, x, config=self.optimal_config))
        return self._optima[key]

    def _changed(self, change: Mapping[str, Any]) -> None:
        self.update()

    def update(self) -> None:
        """Redraw the figure and the report for the sliders' ``x0`` and ``k``."""
        p, k = self.problem, self.k
        plan, opt = self.plan(), self.optimum()
        self.figure.clear()
        ax_x, ax_u = self.figure.subplots(1, 2)
        plot_phase_portrait(plan.X[k], ax=ax_x, target=p.target, reference=opt.X[0],
                            label=f"iteration k = {k}", reference_label="optimum")
        plot_controls(plan.U[k], p.dt, ax=ax_u, u_max=p.u_max, reference=opt.U[0],
                      label=f"iteration k = {k}", reference_label="optimum")
        ax_x.set_title(f"Phase portrait, iteration k = {k} of {self.K}")
        ax_u.set_title(f"Controls, iteration k = {k} of {self.K}")
        x0 = ", ".join(f"{v:.2f}" for v in self.x0)
        self.figure.suptitle(f"{p.name} from x0 = ({x0})")
        verdict = "reaches the target" if plan.success[k] else "misses the target"
        self.report.value = (f"iteration k = {k}: cost <b>{plan.cost[k]:.4g}</b> "
                             f"({plan.cost[k] / opt.cost[0]:.4f} × the optimum's {opt.cost[0]:.4g}), "
                             f"final error <b>{plan.final_error[k]:.3g}</b>, {verdict}")
        _show(self.output, self.figure)

    def static_figure(self, x0: Sequence[float] | None = None, iterations: Sequence[int] | None = None) -> Figure:
        """Every iterate from ``x0`` (default the sliders') in one figure, coloured by ``k``, against the optimum.

        Args:
            x0: start state ``[n_x]``.
            iterations: the iterates to draw (default all, ``0..K``).

        Returns:
            A new figure: the phase portrait and the controls of the iterates, and the cost per iterate.
        """
        p = self.problem
        plan, opt = self.plan(x0), self.optimum(x0)
        fig = Figure(figsize=(14, 4.2), layout="constrained")
        ax_x, ax_u, ax_c = fig.subplots(1, 3, width_ratios=(1, 1.2, 0.8))
        plot_iterates(plan.X, plan.U, p.dt, axes=(ax_x, ax_u), target=p.target, reference_X=opt.X[0],
                      reference_U=opt.U[0], u_max=p.u_max, iterations=iterations)
        ks = np.arange(self.K + 1)
        ax_c.plot(ks, plan.cost, color=MODEL_COLOR, marker="o", label="plan")
        ax_c.axhline(opt.cost[0], color="k", ls="--", lw=1.2, label="optimum")
        ax_c.set(title="Cost per iterate", xlabel="iteration k", ylabel="trajectory cost J")
        ax_c.xaxis.get_major_locator().set_params(integer=True)
        ax_c.grid(alpha=0.3)
        ax_c.legend(fontsize="small")
        start = ", ".join(f"{v:.2f}" for v in (self.x0 if x0 is None else x0))
        fig.suptitle(f"{p.name} from x0 = ({start}): every refinement iterate")
        return fig


# -- the λ explorer ----------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """What the λ explorer shows of one trained model.

    Attributes:
        success_rate: % of test samples whose final iterate reaches the target.
        cost_ratio: mean final cost over the mean cost of the reference (``ratio_of``).
        mean_cost_per_iteration: mean cost of iterates ``k = 0..K``.
        ratio_of: ``"optimum"`` or ``"expert"``: what ``cost_ratio`` divides by.
    """

    success_rate: float
    cost_ratio: float
    mean_cost_per_iteration: tuple[float, ...]
    ratio_of: str = "optimum"

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> "SweepResult":
        """From a dict of :func:`trc.evaluation.metrics.summarize` (cost over the optimum if known, else the expert)."""
        ratio, of = summary.get("cost_over_optimum"), "optimum"
        if ratio is None:
            ratio, of = summary.get("cost_over_expert"), "expert"
        curve = summary.get("mean_cost_per_iteration")
        if summary.get("success_rate") is None or ratio is None or not curve:
            raise TRCError("a sweep result needs success_rate, mean_cost_per_iteration and cost_over_optimum "
                           "or cost_over_expert (as trc.evaluation.metrics.summarize returns them)")
        return cls(float(summary["success_rate"]), float(ratio), tuple(float(c) for c in curve), of)


def as_sweep_result(result: Any) -> SweepResult:
    """A :class:`SweepResult` from itself, a :func:`~trc.evaluation.metrics.summarize` dict or
    :class:`~trc.evaluation.metrics.RefinementMetrics`."""
    from trc.evaluation.metrics import RefinementMetrics, summarize

    if isinstance(result, SweepResult):
        return result
    if isinstance(result, RefinementMetrics):
        return SweepResult.from_summary(summarize(result))
    if isinstance(result, Mapping):
        return SweepResult.from_summary(result)
    raise TRCError(f"a sweep result must be a SweepResult, a summarize() dict or RefinementMetrics, "
                   f"got {type(result).__name__}")


class LambdaExplorer:
    """A selection slider over λ; success, cost ratio and the refinement curve of the chosen λ.

    Args:
        results: λ -> the result of the model trained with it (a :class:`SweepResult`, a
            :func:`~trc.evaluation.metrics.summarize` dict or :class:`~trc.evaluation.metrics.RefinementMetrics`).
        baseline: the same for the baseline (behavior cloning), or None.
        baseline_label: the baseline's name in legends.
        value: the λ selected first (default the smallest).

    Attributes:
        widget: what a notebook displays; ``slider``: the ``SelectionSlider`` over the λ values;
        figure: the figure that :meth:`update` redraws; ``report``: its one-line ``HTML`` summary.
    """

    def __init__(self, results: Mapping[float, Any], baseline: Any = None,
                 baseline_label: str = "behavior cloning", value: float | None = None) -> None:
        if not results:
            raise TRCError("the λ explorer needs at least one result")
        self.lambdas = sorted(float(lam) for lam in results)
        if len(set(self.lambdas)) != len(self.lambdas):
            raise TRCError(f"the λ values {sorted(results)} repeat a value")
        by_value = {float(lam): as_sweep_result(r) for lam, r in results.items()}
        self.results = {lam: by_value[lam] for lam in self.lambdas}
        self.baseline = None if baseline is None else as_sweep_result(baseline)
        self.baseline_label = baseline_label
        kinds = {r.ratio_of for r in (*self.results.values(), *([self.baseline] if self.baseline else []))}
        if len(kinds) > 1:
            raise TRCError("the results divide their costs by different references (optimum and expert); "
                           "give all of them cost_over_optimum or none")
        self.ratio_of = kinds.pop()
        if value is not None and float(value) not in self.results:
            raise TRCError(f"λ = {value} is not among the results' λ values {self.lambdas}")
        self.slider = widgets.SelectionSlider(
            options=[(f"{lam:g}", lam) for lam in self.lambdas],
            value=self.lambdas[0] if value is None else float(value),
            description="λ", continuous_update=False)
        self.report = widgets.HTML()
        self.output = widgets.Output()
        self.figure = Figure(figsize=(13, 3.8), layout="constrained")
        self.slider.observe(self._changed, names="value")
        self.widget = widgets.VBox([self.slider, self.report, self.output])
        self.update()

    @property
    def selected(self) -> float:
        """The λ the slider sets."""
        return float(self.slider.value)

    def _changed(self, change: Mapping[str, Any]) -> None:
        self.update()

    def _draw_sweep(self, ax_s, ax_r, highlight: float | None) -> None:
        """Success and cost ratio per λ as bars (``highlight`` in the model colour), the baseline dashed."""
        pos = np.arange(len(self.lambdas))
        colors = [MODEL_COLOR if lam == highlight or highlight is None else "lightgrey" for lam in self.lambdas]
        for ax, values, ylabel, title in (
                (ax_s, [self.results[lam].success_rate for lam in self.lambdas], "success (%)", "Success per λ"),
                (ax_r, [self.results[lam].cost_ratio for lam in self.lambdas], f"mean cost / {self.ratio_of}",
                 f"Cost over the {self.ratio_of} per λ")):
            bars = ax.bar(pos, values, color=colors)
            ax.bar_label(bars, fmt="%.1f" if ax is ax_s else "%.4f", fontsize="small")
            shown = list(values)
            if self.baseline is not None:
                base = self.baseline.success_rate if ax is ax_s else self.baseline.cost_ratio
                ax.axhline(base, color=BASELINE_COLOR, ls="--", lw=1.5, label=self.baseline_label)
                ax.legend(fontsize="small")
                shown.append(base)
            # zoom on the values: bars from zero would hide differences of a fraction of a point
            low, high = min(shown), max(shown)
            pad = 0.15 * (high - low) or 0.05 * abs(high) or 1.0
            ax.set_ylim(low - pad, high + 2 * pad)
            ax.set_xticks(pos, [f"{lam:g}" for lam in self.lambdas])
            ax.set(title=title, xlabel="process weight λ", ylabel=ylabel)
            ax.grid(alpha=0.3, axis="y")

    def _draw_curve(self, ax, lam: float, color: str = MODEL_COLOR, **style: Any) -> None:
        curve = self.results[lam].mean_cost_per_iteration
        ax.plot(np.arange(len(curve)), curve, color=color, marker="o", label=f"λ = {lam:g}", **style)

    def _finish_curves(self, ax) -> None:
        if self.baseline is not None:
            curve = self.baseline.mean_cost_per_iteration
            ax.plot(np.arange(len(curve)), curve, color=BASELINE_COLOR, ls="--", marker="s", label=self.baseline_label)
        ax.set(title="Refinement: mean cost per iteration", xlabel="refinement iteration k", ylabel="mean cost J")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")

    def update(self) -> None:
        """Redraw the figure and the report for the selected λ."""
        lam = self.selected
        r = self.results[lam]
        self.figure.clear()
        ax_s, ax_r, ax_c = self.figure.subplots(1, 3)
        self._draw_sweep(ax_s, ax_r, lam)
        self._draw_curve(ax_c, lam, lw=2.5)
        self._finish_curves(ax_c)
        text = (f"λ = {lam:g}: success <b>{r.success_rate:.1f}%</b>, cost / {self.ratio_of} "
                f"<b>{r.cost_ratio:.3f}</b>, mean cost {r.mean_cost_per_iteration[0]:.4g} at k = 0 → "
                f"{r.mean_cost_per_iteration[-1]:.4g} at k = {len(r.mean_cost_per_iteration) - 1}")
        if self.baseline is not None:
            b = self.baseline
            text += (f"; {self.baseline_label}: success {b.success_rate:.1f}%, "
                     f"cost / {self.ratio_of} {b.cost_ratio:.3f}")
        self.report.value = text
        _show(self.output, self.figure)

    def static_figure(self) -> Figure:
        """Every λ at once: success and cost ratio per λ, and every refinement curve coloured by λ."""
        import matplotlib

        fig = Figure(figsize=(13, 3.8), layout="constrained")
        ax_s, ax_r, ax_c = fig.subplots(1, 3)
        self._draw_sweep(ax_s, ax_r, None)
        colors = matplotlib.colormaps["viridis"]
        for i, lam in enumerate(self.lambdas):
            self._draw_curve(ax_c, lam, color=matplotlib.colors.to_hex(colors(i / max(len(self.lambdas) - 1, 1))))
        self._finish_curves(ax_c)
        return fig


__all__ = ["IterationExplorer", "LambdaExplorer", "Rollout", "SweepResult", "as_sweep_result", "simulate"]
