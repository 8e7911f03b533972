"""``trc train``: the flags, their defaults, and the model they describe."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

import torch

from trc.cli import seed_arg
from trc.errors import TRCError, check
from trc.io import atomic_write, check_device, check_writable
from trc.training.process_supervision import DEFAULT_VARIANT, PROCESS_VARIANTS, check_loss_settings
from trc.training.supervised_trainer import train_with_process_supervision


def build_model(problem, model_size: str = "small", use_two_level: bool = False, H_cycles: int | None = None,
                L_cycles: int | None = None, iterations: int | None = None,
                gradient_truncation: bool | None = True, halting: bool = False, adapter_rank: int = 0):
    """The model the ``trc train`` flags describe: a preset, with the cycles and K changed if given.

    With ``halting`` the model gets a halting head and ``iterations`` is its ``K_max``.  A list of
    problems makes one :class:`~trc.models.multi_problem.MultiProblemTRC` for all of them, with
    every problem's own adapter of rank ``adapter_rank`` (0: none).

    Gradient truncation is on by default: each refinement iteration is then trained as a step of
    its own (TRM's deep supervision), which is what makes the per-iterate losses of
    :mod:`trc.training.process_supervision` exact: the simulator feedback an iteration reads carries
    no gradient.  ``gradient_truncation=False`` (``--no_gradient_truncation``) backpropagates
    through every cycle of every iteration, at more time and memory; ``None`` keeps the preset's
    own setting (off for the single-latent presets), as the seed's baseline does.
    """
    from trc.models.tiny_recursive_control import TinyRecursiveControl

    preset = f"two_level_{model_size}" if use_two_level else model_size
    overrides = {k: v for k, v in (("H_cycles", H_cycles), ("L_cycles", L_cycles),
                                   ("num_outer_cycles", iterations)) if v is not None}
    if gradient_truncation is not None:
        overrides["use_gradient_truncation"] = gradient_truncation
    if isinstance(problem, (list, tuple)):
        from trc.models.multi_problem import MultiProblemTRC

        return MultiProblemTRC.from_preset(preset, problem, use_halting=halting, adapter_rank=adapter_rank,
                                           **overrides)
    return TinyRecursiveControl.from_preset(preset, problem, use_halting=halting, **overrides)


PROCESS_WEIGHT_HELP = (
    "lambda >= 0, the weight of the process term; 0 is behavior cloning. Its scale depends on "
    "--loss_variant. With 'seed' it is the seed document's lambda (the seed's default is 0.1), on the "
    "seed's term divided by the first cost, -(c_0 - c_K) / (K c_0). 'ratio' and 'monotone' divide a mean cost ratio, mean_k c_k / c_(k-1), "
    "by the horizon T, so lambda pushes each iterate's cost c_k with the gradient lambda / ((K+1) T c_(k-1)) "
    "where the seed's pushes the last one with lambda_seed / (K c_0). The two agree while c_(K-1) is near c_0 "
    "when lambda = lambda_seed T (K+1) / K: for T = 100 and K = 2, the seed's 0.1 is 15 here and trc's "
    "1 is a seed lambda of 0.0067 ('monotone' adds up to 10 (K+1)/K times that, 15 for K = 2, on each "
    "refinement that does not lower its sample's cost). The imitation terms differ too: 'seed' imitates the final plan, "
    "'ratio' and 'monotone' the first")


def add_train_command(sub) -> None:
    """Add ``trc train`` to the CLI's subparsers."""
    from trc.training.multi_problem import BALANCES, DEFAULT_BALANCE, MULTI_PROBLEM_EPOCHS, MULTI_PROBLEM_LR
    from trc.training.recipe import describe

    p = sub.add_parser(
        "train", help="train a model by behavior cloning or process supervision",
        description="Train a Tiny Recursive Control model on a dataset of expert demonstrations. "
                    "With --process_weight 0 every iterate imitates the expert (behavior cloning); "
                    "with --baseline only the final controls do (the seed's train_trc.py baseline); "
                    "otherwise an imitation term plus --process_weight times a term on every refinement "
                    "iterate's cost (see --loss_variant). The defaults are the settings measured in "
                    "benchmarks/vanderpol.py. Writes best_model.pt, last_model.pt and history.json "
                    "into --output_dir, which must not hold a run already unless --resume is given.")
    p.add_argument("--data", required=True,
                   help="dataset .npz written by trc generate; comma-separated datasets of several problems "
                        "train one model for all of them (trc.training.multi_problem)")
    p.add_argument("--problem", default=None,
                   help="problem name or module:Name (default: the dataset's); must match the dataset; with several "
                        "datasets, one name per dataset, comma-separated, in the same order")
    p.add_argument("--output_dir", required=True, help="folder for best_model.pt, last_model.pt, history.json")
    p.add_argument("--epochs", type=int, default=None,
                   help="passes over the training data; with --resume, a larger number extends a finished run "
                        f"(default {describe('epochs')}; with --resume, the run's own; several problems: {MULTI_PROBLEM_EPOCHS}, each epoch a pass over every "
                        "problem's data)")
    p.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"], help="samples per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate, AdamW with warmup and cosine decay (default {DEFAULTS['lr']:g}; "
                        f"several problems: {MULTI_PROBLEM_LR:g})")
    p.add_argument("--problem_balance", choices=tuple(BALANCES), default=None,
                   help="several problems: how their losses L_p share the network. 'log' trains each batch on "
                        "log L_p, whose gradient is its problem's loss relative to its own level, so a problem "
                        "with a large loss does not set the step sizes for the others; 'none' on L_p as it is "
                        f"(default {DEFAULT_BALANCE}; none with --act)")
    p.add_argument("--process_weight", type=float, default=None,
                   help=PROCESS_WEIGHT_HELP + " (0: behavior cloning of every iterate, mean_k MSE(U_k, expert), "
                        "of the self-play archive's plans where the recipe turns self-play on; "
                        f"default {describe('process_weight')})")
    p.add_argument("--baseline", action="store_true",
                   help="the seed's baseline (train_trc.py): behavior cloning of the final controls only, "
                        "MSE(U_K, expert), with the preset's own gradient flow (single-latent presets: through "
                        "every iteration); implies --process_weight 0. Without it, --process_weight 0 "
                        "imitates every iterate")
    p.add_argument("--loss_variant", choices=sorted(PROCESS_VARIANTS), default=None,
                   help="'monotone': the expert teaches the first guess, the cost every refinement, "
                        "each iterate relative to the one before, and every sample is charged for a refinement "
                        "that does not improve it; 'ratio': the same without that charge, which goes further "
                        "where the teacher is weak; 'cost': the ratio term alone, without imitation; "
                        f"'seed': the seed document's formula (default {describe('loss_variant')})")
    p.add_argument("--model_size", choices=("small", "medium", "large"), default=None,
                   help=f"model preset size (default: the --init_from checkpoint's, else {DEFAULTS['model_size']})")
    p.add_argument("--use_two_level", action="store_true", help="two-level z_H/z_L reasoning (TRM)")
    p.add_argument("--H_cycles", type=int, default=None, help="cycles per refinement iteration (default: preset's)")
    p.add_argument("--L_cycles", type=int, default=None, help="low-level updates per cycle (default: preset's)")
    p.add_argument("--iterations", type=int, default=DEFAULTS["iterations"], help="refinement iterations K (default %(default)s)")
    p.add_argument("--act", action="store_true",
                   help="adaptive halting: train all --max_iterations iterations (one backward pass each) and a "
                        "halting head; the model's plan() then stops each start on its own")
    p.add_argument("--max_iterations", type=int, default=None,
                   help=f"K_max of a halting model (default {DEFAULTS['max_iterations']}; needs --act)")
    p.add_argument("--halt_tolerance", type=float, default=None,
                   help="halting target: stop once no later iterate is cheaper by more than this fraction "
                        "(default 0.001; needs --act)")
    p.add_argument("--heads_only", action="store_true",
                   help="with --act and --init_from: keep the planner's weights and train only the halting (and value) heads "
                        "on its costs, so the halting targets do not move under the head")
    p.add_argument("--init_from", default=None,
                   help="start from the weights of this checkpoint (same architecture; a halting head may be new)")
    p.add_argument("--use_value_predictor", action="store_true", help="train a value head with the model")
    p.add_argument("--value_weight", type=float, default=None,
                   help="weight of the value loss (default 0.01; needs --use_value_predictor)")
    p.add_argument("--val_fraction", type=float, default=DEFAULTS["val_fraction"],
                   help="fraction of the dataset held out for validation (default %(default)s)")
    p.add_argument("--no_gradient_truncation", dest="gradient_truncation", action="store_false",
                   help="backpropagate through every cycle of every refinement iteration (default: off, i.e. "
                        "truncated: only the last cycle of each iteration gets gradients, and iterations are "
                        "trained as steps of their own; with --baseline, the preset's own setting)")
    p.add_argument("--seed", type=seed_arg, default=0,
                   help="seeds the split, the model and the training, an integer in [0, 2**63 - 1]")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")
    p.add_argument("--resume", action="store_true",
                   help="continue from --output_dir/last_model.pt: an interrupted run to the same result, or a "
                        "finished one to a larger --epochs (the cosine schedule is then recomputed for the new "
                        "total and continues from the saved step); every other setting and the data must match")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_recipe_arguments(p)
    p.set_defaults(func=train_command)


def add_recipe_arguments(p) -> None:
    """The self-play and curriculum flags; unset, each takes the recipe's value (trc.training.recipe)."""
    from trc.training.recipe import describe

    g = p.add_argument_group(
        "self-play and curriculum",
        "Unset, each takes the default recipe's value for the problem (trc/training/recipe.py; where a "
        "problem departs from it, the default names it); the checkpoint records the values used. "
        "Self-play imitates, for every start, the cheapest plan seen so far (the teacher's, any iterate "
        "of the model, or a perturbation of the model's plan, each re-simulated with the bound) instead "
        "of the teacher's alone.")
    g.add_argument("--self_play", choices=("on", "off"), default=None,
                   help=f"imitate the archive of best plans (default {describe('self_play')}; off with "
                        "--process_weight 0, which then clones the teacher)")
    g.add_argument("--fresh_starts", type=int, default=None,
                   help="start states drawn from the start box beyond the demonstrations, their first plan "
                        f"the teacher's (default {describe('fresh_starts')})")
    g.add_argument("--explore", type=int, default=None,
                   help=f"perturbed copies of the model's plan tried per start and epoch (default {describe('explore')})")
    g.add_argument("--explore_noise", type=float, default=None,
                   help="size of the largest perturbation, a fraction of the control bound "
                        f"(default {describe('explore_noise')})")
    g.add_argument("--explore_best", choices=("on", "off"), default=None,
                   help="perturb the archive's best plan as well as the model's (every other copy) "
                        f"(default {describe('explore_best')})")
    g.add_argument("--stitch", type=int, default=None,
                   help="stitched candidates per start and epoch: the archive plan's first k controls, then the "
                        f"model's plan from the state they reach (default {describe('stitch')})")
    g.add_argument("--neighbours", type=int, default=None,
                   help="plans of this many nearest other starts tried per start and epoch "
                        f"(default {describe('neighbours')})")
    g.add_argument("--tail_starts", type=int, default=None,
                   help="room for later starts along the archive's trajectories, each with the rest of its plan "
                        f"(default {describe('tail_starts')})")
    g.add_argument("--visited_starts", type=int, default=None,
                   help="room for states the model meets when it replans every step in closed loop, added "
                        f"as starts (default {describe('visited_starts')})")
    g.add_argument("--val_closed_loop", type=int, default=None,
                   help="judge every epoch on the validation starts in closed loop, replanning every this many "
                        "steps, and keep the cheapest as best_model.pt (0: the open-loop plans judge; "
                        f"default {describe('val_closed_loop')}, but 0 where --closed_loop_steps tunes the "
                        "last epoch, unless given)")
    g.add_argument("--closed_loop_steps", type=int, default=None,
                   help="after the epochs, this many gradient steps on the cost the model realises in closed loop "
                        "from fresh starts of the start box (see --closed_loop_replan); the step cheapest in closed loop "
                        f"on the validation starts is kept (0: none; default {describe('closed_loop_steps')}; 0 with "
                        "--process_weight 0 or --heads_only). Several problems: the problems judged in closed loop (the pendulum) are "
                        "tuned, each through its own low-rank adapter, embedding row and biases, from the best epoch, "
                        "at lr 1e-3, the others' plans untouched")
    g.add_argument("--adapter_epochs", type=int, default=None,
                   help="several problems: after the epochs (and the closed-loop tuning), each problem judged by its "
                        "open-loop plans tuned this many epochs on its own objective through its own low-rank "
                        "adapter, embedding row and biases, the others' plans untouched; the epoch of the lowest "
                        f"validation cost is kept (0: none; default {describe('adapter_epochs')}; 0 with --act "
                        "or --process_weight 0)")
    g.add_argument("--closed_loop_replan", type=int, default=None,
                   help="the closed-loop tuning's training rollouts plan anew every this many steps, applying each "
                        "plan's first controls (fewer plans, cheaper steps; validation replans every step; "
                        f"default {describe('closed_loop_replan')})")
    g.add_argument("--closed_loop_truncate", type=int, default=None,
                   help="the closed-loop tuning's gradient flows back through at most this many steps of the "
                        "trajectory (truncated backpropagation through time; 0: the whole horizon; "
                        f"default {describe('closed_loop_truncate')})")
    g.add_argument("--closed_loop_critic", type=float, default=None,
                   help="weight of a critic's estimate of the cost still to come, charged at every cut of "
                        "--closed_loop_truncate so that the plans before a cut answer for what follows it (the "
                        "critic is learned alongside from the realised costs; needs --closed_loop_truncate > 0, "
                        "and the default is 0 where it is 0; "
                        f"0: none; default {describe('closed_loop_critic')})")
    g.add_argument("--curriculum_box", type=float, default=None,
                   help="fraction of the start box trained on at the first epoch, growing to 1 "
                        f"(default {describe('curriculum_box')}; 1 is off)")
    g.add_argument("--curriculum_horizon", type=float, default=None,
                   help="fraction of the horizon the loss charges at the first epoch, growing to 1 "
                        f"(default {describe('curriculum_horizon')}; 1 is off)")
    g.add_argument("--curriculum_ramp", type=float, default=None,
                   help=f"fraction of the epochs over which the curriculum grows (default {describe('curriculum_ramp')})")


# The settings chosen on Van der Pol (1000 LQR demonstrations; benchmarks/vanderpol.py runs them): a small
# model trained long beats a big one trained briefly; K = 2 keeps more samples improving at every
# iteration than K = 3 at the same cost; behavior cloning needs the 250 epochs to pass 95 % success.
DEFAULTS: dict[str, Any] = {"epochs": 250, "batch_size": 64, "lr": 3e-3, "process_weight": 1.0,
                            "model_size": "small", "iterations": 2, "max_iterations": 8, "val_fraction": 0.1}
# What a resumed run must share with the run it continues; --epochs and --closed_loop_steps may grow (see
# --resume), the closed-loop tuning's other settings may not (a tuning continued otherwise is neither's).  The data
# is identified by the SHA-256 of its arrays, not by its path.
RESUME_KEYS = ("data_sha256", "problem", "batch_size", "lr", "process_weight", "baseline", "loss_variant",
               "model_size", "use_two_level", "H_cycles", "L_cycles", "iterations", "gradient_truncation",
               "use_value_predictor", "value_weight", "val_fraction", "seed", "self_play", "fresh_starts", "explore",
               "explore_noise", "explore_best", "stitch", "tail_starts", "neighbours", "visited_starts",
               "val_closed_loop", "curriculum_box", "curriculum_horizon", "curriculum_ramp", "act", "max_iterations",
               "halt_tolerance", "init_from", "heads_only", "problem_balance", "closed_loop_replan",
               "closed_loop_truncate", "closed_loop_critic")
# best_epoch.pt: a shared model's best epoch before its problems' tunings (trc.training.multi_problem)
BEST_EPOCH = "best_epoch.pt"
RUN_FILES = ("last_model.pt", "best_model.pt", BEST_EPOCH, "history.json", "closed_loop_tuning.pt",
             "adapter_tuning.pt")
# the records the tunings after the epochs add to best_model.pt's metadata (it then holds tuned weights)
TUNING_RECORDS = ("closed_loop_tuning", "adapter_tuning")


def _check_args(args: argparse.Namespace) -> None:
    """One sentence for the first bad flag."""
    for name in ("epochs", "batch_size", "lr", "val_fraction", "H_cycles", "L_cycles", "iterations"):
        if getattr(args, name) is not None:  # None: the recipe's or the preset's
            check(name, getattr(args, name), "--")
    check_loss_settings(DEFAULTS["process_weight"] if args.process_weight is None else args.process_weight,
                        args.loss_variant or DEFAULT_VARIANT,
                        0.01 if args.value_weight is None else args.value_weight, prefix="--")
    checks = [
        (args.value_weight is None or args.use_value_predictor, "--value_weight needs --use_value_predictor"),
        (args.loss_variant in (None, DEFAULT_VARIANT) or args.process_weight != 0,
         "--loss_variant has no effect with --process_weight 0"),
    ]
    checks += [
        (args.act or (args.max_iterations is None and args.halt_tolerance is None),
         "--max_iterations and --halt_tolerance need --act"),
        (args.max_iterations is None or args.max_iterations > 1,
         f"--max_iterations must be >= 2 (a halting model chooses among its iterations), got {args.max_iterations}"),
        (args.halt_tolerance is None or (math.isfinite(args.halt_tolerance) and args.halt_tolerance >= 0),
         f"--halt_tolerance must be a finite number >= 0, got {args.halt_tolerance}"),
        (not args.act or args.process_weight == 0 or args.loss_variant in (None, "ratio", "monotone"),
         "--act trains the 'ratio' or 'monotone' loss variant (or --process_weight 0)"),
        (not (args.act and args.baseline), "--act and --baseline do not go together"),
        (not args.act or args.iterations == DEFAULTS["iterations"],   # (its default: not told apart from no flag)
         "--iterations sets a fixed number of iterations; a halting model (--act) runs up to --max_iterations"),
        (not args.baseline or args.loss_variant in (None, DEFAULT_VARIANT),
         "--loss_variant has no effect with --baseline (behavior cloning has no process term)"),
        (not args.heads_only or args.init_from is not None, "--heads_only needs --init_from (the planner to keep)"),
        (not args.heads_only or args.act, "--heads_only trains a halting head: it needs --act"),
        (not (args.act and args.adapter_epochs), "--adapter_epochs tunes a model without halting; not with --act"),
    ]
    for name in ("fresh_starts", "explore", "stitch", "tail_starts", "neighbours", "visited_starts",
                 "val_closed_loop", "closed_loop_steps", "adapter_epochs"):
        value = getattr(args, name)
        checks.append((value is None or value >= 0, f"--{name} must be >= 0, got {value}"))
    for name in ("curriculum_box", "curriculum_horizon", "curriculum_ramp"):
        value = getattr(args, name)
        checks.append((value is None or (math.isfinite(value) and 0 < value <= 1),
                       f"--{name} must be in (0, 1], got {value}"))
    checks.append((args.closed_loop_replan is None or args.closed_loop_replan >= 1,
                   f"--closed_loop_replan must be >= 1, got {args.closed_loop_replan}"))
    checks.append((args.closed_loop_truncate is None or args.closed_loop_truncate >= 0,
                   f"--closed_loop_truncate must be >= 0, got {args.closed_loop_truncate}"))
    checks.append((args.closed_loop_critic is None or (math.isfinite(args.closed_loop_critic)
                                                        and args.closed_loop_critic >= 0),
                   f"--closed_loop_critic must be >= 0, got {args.closed_loop_critic}"))
    checks.append((args.explore_noise is None or (math.isfinite(args.explore_noise) and args.explore_noise >= 0),
                   f"--explore_noise must be >= 0, got {args.explore_noise}"))
    if args.baseline:
        checks.append((args.process_weight in (None, 0),
                       f"--baseline is behavior cloning (process weight 0); it takes no --process_weight "
                       f"{args.process_weight}"))
        checks.append((not args.use_value_predictor, "--baseline trains no value head (--use_value_predictor)"))
    for ok, message in checks:
        if not ok:
            raise TRCError(message)
    check_device(args.device)


def _trained_nothing(history: Path) -> bool:
    """Whether ``history`` is the record of a run that stopped before finishing an epoch."""
    try:
        record = json.loads(history.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("epochs") == [] and record.get("stop_reason") is not None


def _check_run_folder(out: Path, settings: dict, resume: bool, epochs: int) -> None:
    """Refuse to overwrite a run without --resume, and to resume one trained otherwise."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found == ["history.json"] and _trained_nothing(out / "history.json"):
        found = []   # a run stopped before its first checkpoint (a non-finite loss): its record is all there is
    if found and not resume:
        raise TRCError(f"{str(out)!r} already holds a run ({found[0]}); pass --resume to continue or extend it, "
                       f"or choose another --output_dir (nothing was overwritten)")
    if not found:
        return
    for name in RUN_FILES:   # left by a kill during a write (atomic_write's temporary files): never read
        for tmp in out.glob(f".{name}.*"):
            tmp.unlink(missing_ok=True)
    from trc.models.checkpoint import read_checkpoint

    last, best = out / "last_model.pt", out / "best_model.pt"
    if not last.exists() and best.exists() and not set(TUNING_RECORDS) & read_checkpoint(best)["metadata"].keys():
        # stopped between the two writes of an improving epoch, which are the same bytes: the best first
        atomic_write(last, lambda tmp: shutil.copyfile(best, tmp))
    for name in ("last_model.pt", "best_model.pt"):   # a run writes both at its first epoch
        if not (out / name).exists():
            raise TRCError(f"cannot resume {str(out)!r}: it holds {found[0]} but no {name}; train afresh in "
                           f"another --output_dir (nothing was overwritten)")
    ckpt = read_checkpoint(out / "last_model.pt")
    before = ckpt["metadata"].get("settings", {})
    where = f"cannot resume from {str(out / 'last_model.pt')!r}"
    changed = [k for k in RESUME_KEYS if before.get(k) != settings[k]]
    if "data_sha256" in changed:
        ours, theirs = settings["data_sha256"].split(","), str(before.get("data_sha256")).split(",")
        if len(ours) != len(theirs):
            raise TRCError(f"{where}: it was trained on {len(theirs)} dataset(s), not {len(ours)} "
                           f"({settings['data']!r})")
        i = next(i for i in range(len(ours)) if ours[i] != theirs[i])
        name = settings["data"].split(",")[i]
        raise TRCError(f"{where}: it was trained on other data (the arrays of {name!r} have "
                       f"SHA-256 {ours[i][:12]}..., the run's {theirs[i][:12]}...)")
    if changed:
        flag = {"gradient_truncation": "no_gradient_truncation"}.get(changed[0], changed[0])
        was, now = before.get(changed[0]), settings[changed[0]]
        if changed[0] == "gradient_truncation":
            was, now = not was, not now
        raise TRCError(f"{where}: it was trained with --{flag} {was!r}, not {now!r}")
    state = ckpt.get("trainer_state", {})
    done = state.get("epoch", -1) + 1
    if epochs < done:
        raise TRCError(f"{where}: it has trained {done} epochs already, more than --epochs {epochs}; "
                       f"pass --epochs {done} or more")
    planned = before.get("epochs")
    finished = planned is None or done >= planned or state.get("history", {}).get("stop_reason") is not None
    if not finished and epochs != planned:   # its learning-rate schedule was made for the planned epochs
        raise TRCError(f"{where}: it is a run of {planned} epochs stopped after {done}; resume it with "
                       f"--epochs {planned} (once finished, a larger --epochs extends it)")


# flags that act only through self-play: given while it is off, they would do nothing
SELF_PLAY_SETTINGS = ("fresh_starts", "explore", "explore_noise", "explore_best", "stitch", "neighbours",
                      "tail_starts", "visited_starts")
# ... and through closed-loop tuning
TUNING_SETTINGS = ("closed_loop_replan", "closed_loop_truncate", "closed_loop_critic")

# model settings that change the computation but not the weights' shapes: --init_from must match them
ARCHITECTURE_FLAGS = {"use_two_level": "--use_two_level", "H_cycles": "--H_cycles", "L_cycles": "--L_cycles"}


PLANNER_FACTS = ("process_weight", "variant", "final_only")


def planner_facts(args: argparse.Namespace) -> dict:
    """A ``--heads_only`` run's record of how its planner was trained (its λ, loss variant, final-only), read
    from the planner's checkpoint: this run's loss flags train no planner, and ``trc analyze`` shows the λ."""
    if not args.heads_only:
        return {}
    from trc.models.checkpoint import read_checkpoint

    saved = read_checkpoint(resumed_checkpoint(args) or args.init_from).get("metadata") or {}
    return {k: saved[k] for k in PLANNER_FACTS if k in saved}


def init_weights(model, path: str) -> None:
    """Load a checkpoint's weights into ``model``; only a halting head and adapters (which are zero at first:
    :class:`~trc.models.multi_problem.ProblemAdapter`) may be missing from it."""
    from trc.models.checkpoint import read_checkpoint

    saved = read_checkpoint(path)
    theirs = saved.get("config") or {}
    for name, flag in ARCHITECTURE_FLAGS.items():   # equal shapes, other computation: say which flag differs
        mine = getattr(model.config, name)
        if name in theirs and theirs[name] != mine:
            raise TRCError(f"--init_from {path!r} was built with {flag} {theirs[name]}, this run with {mine}; "
                           f"pass {flag} {theirs[name]}" if flag != "--use_two_level" else
                           f"--init_from {path!r} is {'a two-level' if theirs[name] else 'a single-latent'} model; "
                           f"{'pass' if theirs[name] else 'leave out'} --use_two_level")
    state = saved["state_dict"]
    own = model.state_dict()
    wrong = sorted(k for k, v in state.items() if k not in own or own[k].shape != v.shape)
    missing = sorted(k for k in own if k not in state and not k.startswith(("halt_head.", "problem_adapter.")))
    if wrong or missing:
        raise TRCError(f"--init_from {path!r} holds another architecture (first mismatch: {(wrong + missing)[0]})")
    model.load_state_dict(state, strict=False)


def check_run_writable(out: Path) -> None:
    """Fail at the door, not after the training, where the run's files cannot be written (``history.json``,
    written last, included)."""
    for name in ("last_model.pt", "history.json"):
        check_writable(out / name)


def resumed_checkpoint(args: argparse.Namespace) -> Path | None:
    """The ``last_model.pt`` a ``--resume`` continues from, if there is one: a resumed run takes its weights
    (and its preset) from there, and no longer needs the ``--init_from`` file it started from."""
    last = Path(args.output_dir) / "last_model.pt" if getattr(args, "resume", False) and args.output_dir else None
    return last if last is not None and last.exists() else None


def default_model_size(args: argparse.Namespace) -> str:
    """``--model_size`` as given, else the preset of the run resumed or of the ``--init_from`` checkpoint, else
    the default."""
    if args.model_size is not None:
        return args.model_size
    source = resumed_checkpoint(args) or args.init_from
    if source is not None:
        from trc.models.checkpoint import read_checkpoint

        size = read_checkpoint(source)["metadata"].get("settings", {}).get("model_size")
        if size is not None:
            return size
    return DEFAULTS["model_size"]


def train_command(args: argparse.Namespace, hooks: dict | None = None) -> int:
    """``trc train``: validate the flags, the output folder and the dataset, train, write checkpoints and history.

    ``hooks`` are handed to the trainer (``on_epoch_end(record)`` and the others of
    :meth:`trc.training.trainer.Trainer.fit`); ``trc sweep`` reports each epoch's validation cost through them.
    """
    from trc.data.datasets import dataset_digest, load_training_data, make_loader, split_dataset
    from trc.models.value_predictor import create_value_predictor

    _check_args(args)
    resumed = resumed_checkpoint(args)
    if args.epochs is None and resumed is not None:   # --resume alone: the run's own epochs
        from trc.models.checkpoint import read_checkpoint

        args.epochs = (read_checkpoint(resumed).get("metadata") or {}).get("settings", {}).get("epochs")
    if args.baseline:
        args.process_weight = 0.0
    args.model_size = default_model_size(args)
    if "," in args.data or "," in (args.problem or ""):  # one model for several problems
        from trc.training.multi_problem import multi_train_command

        return multi_train_command(args, hooks)
    for flag in ("problem_balance", "adapter_epochs"):
        if getattr(args, flag):
            raise TRCError(f"--{flag} needs several problems (comma-separated --problem and --data)")
    if args.lr is None:
        args.lr = DEFAULTS["lr"]
    out = Path(args.output_dir)
    check_run_writable(out)
    data, problem = load_training_data(args.data, args.problem)
    from trc.training.recipe import build_training_data, recipe, recipe_flags

    given = recipe_flags(args)
    for key, value in recipe(problem.name, **given).items():
        setattr(args, key, value)
    for flag in ("val_closed_loop", "closed_loop_replan"):
        if (getattr(args, flag) or 0) > problem.horizon:
            raise TRCError(f"--{flag} must be at most the horizon of {problem.name!r}, {problem.horizon} steps, "
                           f"got {getattr(args, flag)}")
    for settings, on, what, how in ((SELF_PLAY_SETTINGS, args.self_play, "self-play", "--self_play on"),
                                    (TUNING_SETTINGS, args.closed_loop_steps, "the closed-loop tuning",
                                     "--closed_loop_steps N")):
        unused = [k for k in settings if given[k] is not None]
        if unused and not on:
            raise TRCError(f"--{unused[0]} is a setting of {what}, which is off for {problem.name!r} here; "
                           f"pass {how} to use it")
    if given["curriculum_ramp"] is not None and args.curriculum_box >= 1 and args.curriculum_horizon >= 1:
        raise TRCError(f"--curriculum_ramp paces a curriculum, and both are off for {problem.name!r} here; pass "
                       f"--curriculum_box or --curriculum_horizon below 1 to use it")
    if args.closed_loop_steps and args.closed_loop_critic > 0 and not args.closed_loop_truncate:
        raise TRCError("--closed_loop_critic needs --closed_loop_truncate > 0: the critic values the state at each cut")
    settings = {k: getattr(args, k) for k in RESUME_KEYS if hasattr(args, k)}
    settings.update(problem=problem.to_dict(), data=args.data, data_sha256=dataset_digest(data), epochs=args.epochs,
                    closed_loop_steps=args.closed_loop_steps,  # recorded; a resumed run may tune longer
                    adapter_epochs=args.adapter_epochs)
    _check_run_folder(out, settings, args.resume, args.epochs)

    train, val = split_dataset(data, args.val_fraction, args.seed)
    torch.manual_seed(args.seed)
    K = (args.max_iterations or DEFAULTS["max_iterations"]) if args.act else args.iterations
    model = build_model(problem, args.model_size, args.use_two_level, args.H_cycles, args.L_cycles, K,
                        gradient_truncation=(None if args.gradient_truncation else False) if args.baseline
                        else args.gradient_truncation, halting=args.act)
    if args.init_from is not None and resumed_checkpoint(args) is None:
        init_weights(model, args.init_from)
    if args.heads_only:
        from trc.training.deep_supervision import freeze_planner

        freeze_planner(model)
    value_predictor = create_value_predictor(model.config.latent_dim) if args.use_value_predictor else None
    loader = build_training_data(problem, train, args.batch_size, settings, args.seed, args.epochs) \
        or make_loader(train, args.batch_size, shuffle=True, seed=args.seed)
    model = train_with_process_supervision(
        model, loader,
        make_loader(val, 256, shuffle=False), epochs=args.epochs, lr=args.lr,
        process_weight=args.process_weight, value_predictor=value_predictor,
        value_weight=0.01 if args.value_weight is None else args.value_weight, variant=args.loss_variant,
        output_dir=out, resume=args.resume, metadata={"settings": settings, **planner_facts(args)}, seed=args.seed,
        final_only=args.baseline, device=args.device, progress=not args.quiet, hooks=hooks,
        halt_tolerance=args.halt_tolerance, val_closed_loop=args.val_closed_loop,
        restore_best=not args.closed_loop_steps)
    history = model.training_history
    stop = history["stop_reason"]
    if args.closed_loop_steps and not (stop and stop.startswith("non-finite")):
        model, history["closed_loop_tuning"] = _tune_in_closed_loop(model, val, args, out, settings)
    atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
    if stop and stop.startswith("non-finite"):
        kept = ("no checkpoint was written" if history["best_epoch"] is None
                else f"the checkpoints of the epochs before are kept in {str(out)!r}")
        raise TRCError(f"training stopped: {stop} (a too large --lr?); {kept}")
    best = history["epochs"][history["best_epoch"]]["val"] if history["best_epoch"] is not None else None
    if stop:
        print(f"trc train: stopped early: {stop}")
    if best is not None:
        picked = ("" if "closed_cost" not in best else  # picked in closed loop (--val_closed_loop): say so first
                  f"closed-loop success {100 * best['closed_success']:.1f}%, mean cost {best['closed_cost']:.4g} "
                  f"(replanning every {args.val_closed_loop} steps); open loop ")
        print(f"trc train: best epoch {history['best_epoch']}: {picked}success {100 * best['success']:.1f}%, "
              f"mean cost {best['cost']:.4g}"
              + (f", {best['iterations']:.2f} iterations per start" if "iterations" in best else "")
              + f"; wrote {out / 'best_model.pt'}")
    if args.closed_loop_steps:
        from trc.training.closed_loop_tuning import kept_record

        kept = kept_record(history["closed_loop_tuning"])
        print(f"trc train: closed-loop tuning kept step {kept['step']} of {args.closed_loop_steps}: "
              f"closed-loop success {100 * kept['success']:.1f}%, mean cost {kept['cost']:.4g} on the validation "
              f"starts; best_model.pt holds it")
    return 0


def _tune_in_closed_loop(model, val: dict, args: argparse.Namespace, out: Path, settings: dict):
    """``--closed_loop_steps``: tune the last epoch's model on its closed-loop cost
    (:mod:`trc.training.closed_loop_tuning`) and write it as ``best_model.pt``.

    The tuning starts from the last epoch, not the best: the epochs' learning rate has decayed
    there (on the pendulum, tuning the best of 100 epochs, epoch 66, lost success; the last gained).

    The tuning's state is saved in ``closed_loop_tuning.pt`` at every validation, so that
    ``--resume`` continues it.  ``best_model.pt`` then records this run's ``settings`` (a resumed run
    may tune longer than the run that wrote the best epoch).  Returns the tuned model and the tuning's log.
    """
    from trc.models.checkpoint import read_checkpoint, save_checkpoint
    from trc.training.closed_loop_tuning import ClosedLoopTuning, tune_closed_loop

    state_path = out / "closed_loop_tuning.pt"
    trained = len(model.training_history["epochs"])  # a state saved after other epochs is not continued
    config = ClosedLoopTuning(steps=args.closed_loop_steps, replan_every=args.closed_loop_replan,
                              truncate=args.closed_loop_truncate, critic=args.closed_loop_critic)
    state = None
    if args.resume and state_path.exists():
        state = read_checkpoint(state_path)["trainer_state"]
        state = state if state.get("trained_epochs") == trained else None
        if state is not None:
            check_tuning_state(state, config, state_path)
    best = read_checkpoint(out / "best_model.pt")
    meta = best["metadata"]

    def save(s: dict) -> None:
        save_checkpoint(model, state_path, trainer_state={**s, "trained_epochs": trained}, **meta)

    x0 = torch.as_tensor(val["initial_states"], dtype=torch.float64)
    target = torch.as_tensor(val["target_states"], dtype=torch.float64)
    model, log = tune_closed_loop(model, x0, config, seed=args.seed, val_target=target, state=state, save=save)
    save_checkpoint(model, out / "best_model.pt", trainer_state=best.get("trainer_state"),  # --resume reads it
                    **{**meta, "settings": settings, "closed_loop_tuning": tuning_record(config, log)})
    return model, log


def check_tuning_state(state: dict, config, state_path: Path, whose: str = "its") -> None:
    """Refuse, in one sentence, to continue a saved closed-loop tuning ``state`` (``whose`` tuning) with
    settings other than ``config`` (a :class:`~trc.training.closed_loop_tuning.ClosedLoopTuning`); the run's
    ``--closed_loop_replan``, ``--closed_loop_truncate`` and ``--closed_loop_critic`` are checked at the door
    (``RESUME_KEYS``)."""
    saved, where = state["config"], f"cannot resume from {str(state_path)!r}"
    if saved["steps"] > config.steps:
        raise TRCError(f"{where}: {whose} tuning was set for {saved['steps']} closed-loop steps, more than "
                       f"--closed_loop_steps {config.steps}")
    if saved.get("lr", config.lr) != config.lr:
        raise TRCError(f"{where}: {whose} tuning's learning rate was {saved['lr']:g}, not {config.lr:g}")


def tuning_record(config, log: list[dict]) -> dict:
    """What a tuned ``best_model.pt`` records of its closed-loop tuning: its settings and the step it kept."""
    from trc.training.closed_loop_tuning import kept_record

    return {"steps": config.steps, "replan_every": config.replan_every, "truncate": config.truncate,
            "critic": config.critic, "kept_step": kept_record(log)["step"]}
