"""The default recipe: the self-play, curriculum and loss settings ``trc train`` uses when no flag is given.

One recipe serves every problem; where a problem needs another value, :data:`PROBLEM_RECIPES`
says so, and the checkpoint records the values a run used (its ``settings``).  Measured in
``benchmarks/beyond_teacher.py``.
"""

from __future__ import annotations

from typing import Any, Mapping

from trc.errors import TRCError
from trc.training.process_supervision import DEFAULT_VARIANT

# The recipe for every problem (trc train's flags of the same names).
RECIPE: dict[str, Any] = {
    "epochs": 250,            # passes over the demonstrations
    "loss_variant": DEFAULT_VARIANT,
    "process_weight": 1.0,    # weight of the process term; 0: imitation alone (of the archive with self-play)
    "self_play": False,       # imitate the archive of the best plans seen, not only the teacher
    "fresh_starts": 1000,     # start states drawn from the box beyond the demonstrations
    "explore": 8,             # perturbed copies of the model's plan tried per start and epoch
    "explore_noise": 0.3,     # the largest perturbation, a fraction of u_max
    "explore_best": False,    # perturb the archive's best plan too, not only the model's
    "stitch": 0,              # archive prefix + the model's plan from where it leads, tried per start and epoch
    "neighbours": 0,          # plans of the nearest other starts tried per start and epoch
    "tail_starts": 0,         # room for later starts along the archive's plans, with the rest of the plan
    "visited_starts": 0,      # room for states the model meets in closed loop, added as starts
    "curriculum_box": 1.0,    # fraction of the start box in play at the first epoch (1: off)
    "curriculum_horizon": 1.0,  # fraction of the horizon charged at the first epoch (1: off)
    "curriculum_ramp": 0.5,   # fraction of the epochs over which both grow to 1
    "val_closed_loop": 0,     # > 0: the best epoch is the one cheapest in closed loop, replanning this often
                              # (not run when closed-loop tuning follows: the tuning takes the last epoch)
    "closed_loop_steps": 0,   # > 0: then the last epoch tuned this many steps on its closed-loop cost
    "closed_loop_replan": 1,  # steps between the plans of the tuning's training rollouts
    "closed_loop_truncate": 0,  # steps the tuning's gradient flows back through the trajectory (0: all)
    "closed_loop_critic": 0.0,  # weight of a learned critic's cost-to-go at each cut of the tuning's gradient
    "adapter_epochs": 0,      # > 0, in a model of several problems: then epochs of a problem judged by its open-loop
                              # plans, tuned on its own objective through its own adapter (trc.training.adapter_tuning)
}

# Where a problem departs from RECIPE.
PROBLEM_RECIPES: dict[str, dict[str, Any]] = {
    # the weak teacher: self-play and the 'ratio' term, whose refinements may move far from it; 200 epochs
    # (109-115 s of CPU, benchmarks/beyond_teacher.py) reached 79.7 / 82.2 % success on two splits of 1000 starts of our own (seeds 777 /
    # 4242; the optimum 80.5 / 82.6 %) where 60 reached 78.2 / 79.2 %, every seed of five gaining on both
    "vanderpol_constrained": {"self_play": True, "loss_variant": "ratio", "epochs": 200},
    # the failing teacher: self-play that passes good swing-ups on (to the later states along them and to the
    # neighbouring starts), imitated alone, then the model tuned on the cost it realises in closed loop
    # (trc.training.closed_loop_tuning; its rollouts plan every 4 steps, so 600 steps cost about what 170
    # replanning every step do, and gain more; its gradient flows back through 40 steps of the trajectory at
    # most, which gained over all 100, and a learned critic charges the cost to come at each cut, which gained
    # over the cut alone: benchmarks/beyond_teacher.py).  Untuned (--closed_loop_steps 0), its best epoch is
    # the one cheapest in closed loop replanning every step, the controller it is judged as (replanning every
    # 5 steps picked an epoch at 41 % success there that reached 12 % replanning every step; the last epoch 65 %)
    "pendulum": {"self_play": True, "loss_variant": "ratio", "process_weight": 0.0, "explore_noise": 1.0,
                 "stitch": 2, "neighbours": 4, "tail_starts": 3000, "visited_starts": 1000, "epochs": 100,
                 "val_closed_loop": 1, "closed_loop_steps": 600, "closed_loop_replan": 4, "closed_loop_truncate": 40,
                 "closed_loop_critic": 0.5},
}


# Settings a problem's recipe gives for training that problem alone: one model for several problems
# (trc.training.multi_problem) keeps the problem-free values of these unless a flag gives them.  A shared model's
# epoch is not picked in one problem's closed loop; every other setting of a problem's recipe (the pendulum's
# imitation of its archive, its exploration, stitching and neighbours, and its closed-loop tuning, there through
# its own adapter: trc.training.adapter_tuning) it takes.  Measured in
# benchmarks/multi_problem.py (seeds 0-2): with the pendulum's own values, each problem's own AdamW moments and
# hidden biases, the shared model swings the pendulum up in closed loop from 65-74 % of the starts (0 % with the
# problem-free values), constrained Van der Pol reaches 79-82 % (77-78 % before) and Van der Pol meets its target
# with every seed, the double integrator with two of three.
SINGLE_PROBLEM_ONLY = ("val_closed_loop",)

# Where a problem's recipe departs from PROBLEM_RECIPES in one model for several problems.  The pendulum: its
# closed-loop tuning through its own adapter does what the states visited in closed loop did for the epochs, in a
# third of their time; measured in benchmarks/multi_problem.py (test starts, closed loop, seeds 0 and 2), with the
# visited states and 600 tuning steps 90.7 / 97.3 % at 1.35 / 1.09x and the run 23-25 minutes (the visits' closed
# loops about 1.5 s of every epoch's 3.6 s); without them and 600 steps 93.7 / 85.6 % at 1.14 / 1.17x in 15
# minutes; without them and 1000 steps 93.7 / 96.9 % at 1.14 / 1.11x (seed 0 kept the same step, 575).
#
# The double integrator: the shared network serves it least well of the three problems judged open loop (the single
# model's 1.0008x the optimum against 1.007-1.011x untuned), and its epochs are the cheapest (T = 15).  Its
# adapter tuned on its own objective, measured on seeds 0 and 2 (test starts; the timings beside two other runs on
# the 2-core machine): 40 epochs 1.0026 / 1.0028x in 13 s, 80 epochs 1.0020 / 1.0019x in 21 s, from 1.0073 /
# 1.0107x; its refinement then settles sooner, and the halting targets ask for 1.95 / 1.58 iterations where they
# asked for 3.06 / 3.44 (Van der Pol's 2.51 / 2.39).
MULTI_PROBLEM_RECIPES: dict[str, dict[str, Any]] = {
    "pendulum": {"visited_starts": 0, "closed_loop_steps": 1000},
    "double_integrator": {"adapter_epochs": 80},
}


def recipe(problem: str, multi: bool = False, **given: Any) -> dict[str, Any]:
    """The recipe's settings for ``problem``, with every ``given`` value that is not None instead.

    With ``multi`` (``problem`` trained in one model with others) the problem's own values of
    :data:`SINGLE_PROBLEM_ONLY` are left out and those of :data:`MULTI_PROBLEM_RECIPES` put in.  Where the gradient is not cut (``closed_loop_truncate``
    0) the recipe's critic is off too, unless ``closed_loop_critic`` is given; where closed-loop
    tuning follows (``closed_loop_steps > 0``) the recipe's closed-loop validation is off, unless
    ``val_closed_loop`` is given: the tuning starts from the last epoch, so no epoch is picked by it.
    """
    unknown = sorted(set(given) - set(RECIPE))
    if unknown:
        raise TRCError(f"the recipe has no setting {unknown[0]!r}; known: {', '.join(RECIPE)}")
    own = {k: v for k, v in PROBLEM_RECIPES.get(problem, {}).items() if not (multi and k in SINGLE_PROBLEM_ONLY)}
    if multi:
        own.update(MULTI_PROBLEM_RECIPES.get(problem, {}))
    out = {**RECIPE, **own}
    out.update({k: v for k, v in given.items() if v is not None})
    if not out["closed_loop_truncate"] and given.get("closed_loop_critic") is None:
        out["closed_loop_critic"] = 0.0  # the recipe's critic values the state at the cuts: none, no critic
    if out["closed_loop_steps"] and given.get("val_closed_loop") is None:
        out["val_closed_loop"] = 0  # it would only pick an epoch the tuning does not start from
    return out


def judged_in_closed_loop(problem: str) -> bool:
    """Whether ``problem``'s recipe judges its models as controllers replanning in closed loop (it picks
    or tunes them there), not by their open-loop plans."""
    own = PROBLEM_RECIPES.get(problem, {})
    return bool(own.get("val_closed_loop") or own.get("closed_loop_steps"))


def recipe_flags(args) -> dict[str, Any]:
    """The recipe's settings as ``trc train``'s flags give them (None: not given), on/off flags as booleans.

    An explicit ``--process_weight 0`` (behavior cloning of the teacher) turns self-play and
    closed-loop tuning off unless ``--self_play`` or ``--closed_loop_steps`` is given too;
    ``--heads_only`` (a halting head on a kept planner) turns closed-loop tuning off; ``--process_weight 0``
    or ``--act`` turns ``adapter_epochs`` off unless it is given.
    """
    flags = {k: getattr(args, k, None) for k in RECIPE}
    for key in ("self_play", "explore_best"):
        flags[key] = None if flags[key] is None else flags[key] == "on"
    if args.process_weight == 0:
        flags["self_play"] = False if flags["self_play"] is None else flags["self_play"]
    if args.process_weight == 0 or getattr(args, "heads_only", False):  # a kept planner is not tuned either
        flags["closed_loop_steps"] = 0 if flags["closed_loop_steps"] is None else flags["closed_loop_steps"]
    if args.process_weight == 0 or getattr(args, "act", False):  # tuned on the objective of a model without halting
        flags["adapter_epochs"] = 0 if flags["adapter_epochs"] is None else flags["adapter_epochs"]
    return flags


def describe(key: str) -> str:
    """``"X (Y for pendulum, ...)"``: the default of ``key``, then in parentheses the problems that depart from it."""
    text = _show(RECIPE[key])
    others = [f"{_show(r[key])} for {name}" for name, r in sorted(PROBLEM_RECIPES.items()) if key in r]
    others += [f"{_show(r[key])} for {name} in a model of several problems"
               for name, r in sorted(MULTI_PROBLEM_RECIPES.items()) if key in r]
    return text + (" (" + ", ".join(others) + ")" if others else "")


def _show(value: Any) -> str:
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def build_training_data(problem, data: Mapping, batch_size: int, settings: Mapping[str, Any], seed: int,
                        epochs: int):
    """The training batches the recipe's ``settings`` describe.

    Returns:
        A :class:`~trc.training.selfplay.SelfPlayData` when self-play or a curriculum is on, else
        None (the caller then uses plain demonstrations, :func:`trc.data.datasets.make_loader`).
    """
    from trc.training.curriculum import Curriculum
    from trc.training.selfplay import SelfPlayConfig, SelfPlayData, closed_loop_visits

    curriculum = Curriculum(settings["curriculum_box"], settings["curriculum_horizon"], settings["curriculum_ramp"])
    config = SelfPlayConfig(fresh_starts=settings["fresh_starts"], explore=settings["explore"],
                            noise=settings["explore_noise"],
                            visited_starts=settings["visited_starts"], stitch=settings["stitch"],
                            explore_best=settings["explore_best"], tail_starts=settings["tail_starts"],
                            neighbours=settings["neighbours"]) \
        if settings["self_play"] else None
    if config is None and not curriculum.active:
        return None
    return SelfPlayData(problem, data, batch_size, config, curriculum if curriculum.active else None,
                        seed=seed, visit=closed_loop_visits, epochs=epochs)


__all__ = ["MULTI_PROBLEM_RECIPES", "PROBLEM_RECIPES", "RECIPE", "SINGLE_PROBLEM_ONLY", "build_training_data", "describe",
           "judged_in_closed_loop", "recipe", "recipe_flags"]
