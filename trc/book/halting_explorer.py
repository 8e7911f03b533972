"""The book's explorer of the halting threshold: mean iterations against cost.

:class:`HaltingExplorer` runs a halting model once with every iteration, keeps each
start's halting probability ``sigmoid(q_halt)`` and simulated cost per iterate, and
answers for any threshold where each start would halt
(:func:`trc.models.halting.first_halt`) and what its plan costs there.  A slider over
the threshold redraws the trade-off (``.observe``, as the widgets of
:mod:`trc.book.widgets`); ``static_figure()`` draws the whole curve for the built book.
"""

from __future__ import annotations

from typing import Any, Mapping

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from trc.book.widgets import _show
from trc.evaluation.plots import MODEL_COLOR
from trc.models.halting import first_halt


class HaltingExplorer:
    """Threshold on ``sigmoid(q_halt)`` -> mean iterations and mean cost over the optimum.

    Args:
        model: a halting model (``config.use_halting``).
        x0: start states ``[N, n_x]`` (numpy).
        optimal_costs: the optimum's cost per start ``[N]``.
        threshold: the slider's first value (0.5 is the trained rule ``q_halt > 0``).
    """

    def __init__(self, model, x0: np.ndarray, optimal_costs: np.ndarray, threshold: float = 0.5):
        p = model.problem
        x = torch.as_tensor(x0, dtype=torch.float32)
        with torch.no_grad():   # every iteration, with what the head says after each
            x, target = model._inputs(x, None)
            z_init, carry = model.start(x, target)
            Us, probability = [carry.U], [torch.zeros(len(x))]
            for _ in range(model.num_iterations):
                carry = model.refine(carry, x, target, z_init)
                Us.append(carry.U)
                probability.append(torch.sigmoid(model.halt_logits(carry)[:, 0]))
            self.probability = torch.stack(probability, 1)                                   # (N, K+1)
            U = torch.stack(Us, 1)
            N, K1 = U.shape[:2]
            ev = p.evaluate(x.double().repeat_interleave(K1, 0), U.flatten(0, 1).double())
        self.costs = ev["cost"].view(N, K1).numpy()                                         # (N, K+1)
        self.optimum = float(np.mean(optimal_costs))
        self.slider = widgets.FloatSlider(value=threshold, min=0.05, max=0.99, step=0.01,
                                          description="threshold", continuous_update=False)
        self.output = widgets.Output()
        self.slider.observe(self._changed, names="value")
        self.widget = widgets.VBox([self.slider, self.output])
        self.update()

    def at(self, threshold: float) -> dict[str, float]:
        """``mean_iterations`` and ``cost_over_optimum`` when halting above ``threshold``."""
        k = first_halt(self.probability, threshold).numpy()
        cost = self.costs[np.arange(len(k)), k]
        return {"mean_iterations": float(k.mean()), "cost_over_optimum": float(cost.mean()) / self.optimum}

    def _changed(self, change: Mapping[str, Any]) -> None:
        self.update()

    def _draw(self, ax, highlight: float | None) -> None:
        thresholds = np.linspace(0.05, 0.99, 48)
        points = [self.at(t) for t in thresholds]
        ax.plot([q["mean_iterations"] for q in points], [q["cost_over_optimum"] for q in points], "-",
                color=MODEL_COLOR, label="halting, threshold 0.05 to 0.99")
        full = self.costs[:, -1].mean() / self.optimum
        ax.axhline(full, color="0.4", ls="--", lw=1, label=f"all {self.costs.shape[1] - 1} iterations")
        if highlight is not None:
            q = self.at(highlight)
            ax.plot(q["mean_iterations"], q["cost_over_optimum"], "o", color="C3",
                    label=f"threshold {highlight:.2f}: {q['mean_iterations']:.2f} iterations, "
                          f"cost/opt {q['cost_over_optimum']:.4f}")
        ax.set(xlabel="mean iterations used", ylabel="mean cost / optimum", title="Halting: work against cost")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")

    def update(self) -> Figure:
        fig = Figure(figsize=(6.5, 4))
        self._draw(fig.add_subplot(), self.slider.value)
        _show(self.output, fig)
        return fig

    def static_figure(self) -> Figure:
        """The whole trade-off, with the trained threshold 0.5 marked."""
        fig = Figure(figsize=(6.5, 4))
        self._draw(fig.add_subplot(), 0.5)
        return fig
