"""Evaluation: every iterate re-simulated (:mod:`~trc.evaluation.refinement_evaluator`), the
metrics it yields (:mod:`~trc.evaluation.metrics`), the figures (:mod:`~trc.evaluation.plots`)
and ``trc analyze`` (:mod:`~trc.evaluation.analyze`)."""

from trc.evaluation.metrics import RefinementMetrics, analyze_convergence, format_table, summarize
from trc.evaluation.refinement_evaluator import RefinementEvaluator, solve_optimal_costs

__all__ = ["RefinementEvaluator", "RefinementMetrics", "analyze_convergence", "format_table",
           "solve_optimal_costs", "summarize"]
