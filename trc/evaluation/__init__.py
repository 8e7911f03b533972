"""Evaluation: every iterate re-simulated (:mod:`~trc.evaluation.refinement_evaluator`), the
metrics it yields (:mod:`~trc.evaluation.metrics`), the figures (:mod:`~trc.evaluation.plots`),
``trc analyze`` (:mod:`~trc.evaluation.analyze`) and the closed loop
(:func:`~trc.evaluation.closed_loop.closed_loop`: replan from where the system is; its
:class:`~trc.evaluation.closed_loop.Controller` for a loop of your own)."""

from trc.evaluation.closed_loop import ClosedLoopResult, Controller, closed_loop
from trc.evaluation.metrics import RefinementMetrics, analyze_convergence, format_table, summarize
from trc.evaluation.refinement_evaluator import RefinementEvaluator, solve_optimal_costs

__all__ = ["ClosedLoopResult", "Controller", "RefinementEvaluator", "RefinementMetrics", "analyze_convergence",
           "closed_loop", "format_table", "solve_optimal_costs", "summarize"]
