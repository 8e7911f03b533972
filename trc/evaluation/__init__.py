"""Evaluation: every iterate re-simulated (:mod:`~trc.evaluation.refinement_evaluator`), the
metrics it yields (:mod:`~trc.evaluation.metrics`), the figures (:mod:`~trc.evaluation.plots`),
``trc analyze`` (:mod:`~trc.evaluation.analyze`) and the closed loop
(:func:`~trc.evaluation.closed_loop.closed_loop`: replan from where the system is)."""

from trc.evaluation.closed_loop import ClosedLoopResult, closed_loop
from trc.evaluation.metrics import RefinementMetrics, analyze_convergence, format_table, summarize
from trc.evaluation.refinement_evaluator import RefinementEvaluator, solve_optimal_costs

__all__ = ["ClosedLoopResult", "RefinementEvaluator", "RefinementMetrics", "analyze_convergence", "closed_loop",
           "format_table", "solve_optimal_costs", "summarize"]
