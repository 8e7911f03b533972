"""trc: Tiny Recursive Control.

A tiny recursive network turns a start state into an open-loop control
sequence and refines it over K iterations, using the feedback of simulating
its own plan.  See the README for one sentence per module.
"""

from trc.cost import final_error, trajectory_cost
from trc.dynamics import rk4, rollout
from trc.errors import TRCError
from trc.problems import PROBLEMS, ControlProblem, get_problem, simulate_vanderpol_torch
from trc.config import TRCConfig
from trc.model import TinyRecursiveControl, TRCOutput
from trc.value import ValuePredictor, create_value_predictor
from trc.checkpoint import load_checkpoint, save_checkpoint

__version__ = "0.1.0"

__all__ = [
    "PROBLEMS", "ControlProblem", "TRCError", "final_error", "get_problem", "rk4", "rollout",
    "simulate_vanderpol_torch", "trajectory_cost",
    "TRCConfig", "TRCOutput", "TinyRecursiveControl", "ValuePredictor", "create_value_predictor",
    "load_checkpoint", "save_checkpoint",
]
