"""The models: the recursive planner (for one problem or several), its config and presets, the value head, checkpoints.

The seed document's ``from src.models import TinyRecursiveControl, create_value_predictor``
is ``from trc.models import ...`` here.
"""

from trc.models.config import PRESETS, TRCConfig, preset_config
from trc.models.tiny_recursive_control import TRCCarry, TRCOutput, TinyRecursiveControl
from trc.models.multi_problem import MultiProblemTRC, ProblemPlanner
from trc.models.value_predictor import ValuePredictor, create_value_predictor
from trc.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

__all__ = ["MultiProblemTRC", "PRESETS", "ProblemPlanner", "TRCCarry", "TRCConfig", "TRCOutput", "TinyRecursiveControl", "ValuePredictor",
           "create_value_predictor", "load_checkpoint", "preset_config", "read_checkpoint", "save_checkpoint"]
