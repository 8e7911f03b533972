"""trc: Tiny Recursive Control.

A tiny recursive network turns a start state into an open-loop control
sequence and refines it over K iterations, using the feedback of simulating
its own plan.  See the README for one sentence per module.
"""

from trc.cost import final_error, trajectory_cost
from trc.dynamics import rk4, rollout
from trc.errors import TRCError
from trc.problems import PROBLEMS, ControlProblem, get_problem, simulate_vanderpol_torch
from trc.models import (TRCConfig, TRCOutput, TinyRecursiveControl, ValuePredictor, create_value_predictor,
                        load_checkpoint, save_checkpoint)

__version__ = "0.1.0"

# The rest of the seed document's API, imported on first use (PEP 562): ``import trc`` stays
# light, and ``trc.RefinementEvaluator`` does not load matplotlib until it is asked for.
_LAZY = {
    "generate_dataset": "trc.data.datasets", "load_dataset": "trc.data.datasets", "save_dataset": "trc.data.datasets",
    "make_loader": "trc.data.datasets", "split_dataset": "trc.data.datasets",
    "lqr_controls": "trc.data.experts", "optimal_controls": "trc.data.experts",
    "behavior_cloning_loss": "trc.training.process_supervision",
    "compute_trajectory_cost": "trc.training.process_supervision",
    "compute_process_supervision_loss": "trc.training.process_supervision",
    "compute_value_prediction_loss": "trc.training.process_supervision",
    "train_with_process_supervision": "trc.training.supervised_trainer",
    "train_behavior_cloning": "trc.training.supervised_trainer",
    "RefinementEvaluator": "trc.evaluation.refinement_evaluator", "RefinementMetrics": "trc.evaluation.metrics",
    "analyze_convergence": "trc.evaluation.metrics", "summarize": "trc.evaluation.metrics",
    "plot_refinement_curves": "trc.evaluation.plots", "Experiment": "trc.book.experiment",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "PROBLEMS", "ControlProblem", "TRCError", "final_error", "get_problem", "rk4", "rollout",
    "simulate_vanderpol_torch", "trajectory_cost",
    "TRCConfig", "TRCOutput", "TinyRecursiveControl", "ValuePredictor", "create_value_predictor",
    "load_checkpoint", "save_checkpoint", *_LAZY,
]
