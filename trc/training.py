"""Training a Tiny Recursive Control model: behavior cloning, process supervision, ``trc train``.

Both trainers are thin over :class:`trc.trainer.Trainer`: they supply the loss
(:func:`trc.losses.compute_process_supervision_loss`; behavior cloning is its
``process_weight = 0`` case), a validation function (success rate and mean
cost of the final, clipped controls on held-out data, simulated in the
problem's simulator) and checkpoints in :mod:`trc.checkpoint`'s format that
also carry the trainer's state, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from trc.errors import TRCError
from trc.io import atomic_write
from trc.losses import DEFAULT_VARIANT, PROCESS_VARIANTS, compute_process_supervision_loss, iteration_costs
from trc.trainer import TrainConfig, Trainer

Tensor = torch.Tensor


def validation_metrics(model: nn.Module, val_loader, dynamics_fn: Callable | None = None,
                       cost_params: Mapping | None = None) -> dict[str, float]:
    """Success rate, mean final error and mean cost of the model's final controls.

    Controls are clipped to the bound and simulated (``dynamics_fn`` or the
    problem's rollout); costs use the problem's ``Q, R, Qf`` unless
    ``cost_params`` overrides them.

    Args:
        model: a :class:`~trc.model.TinyRecursiveControl` (``model.problem`` is used).
        val_loader: dict batches with ``initial_states``, ``target_states`` and
            optionally the expert's ``costs``.

    Returns:
        ``success`` (fraction), ``final_error``, ``cost`` (means over samples) and, when the
        batches carry expert costs, ``cost_over_expert`` (ratio of the means).
    """
    problem = model.problem
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    totals = {"success": 0.0, "final_error": 0.0, "cost": 0.0, "expert_cost": 0.0}
    n = 0
    for batch in val_loader:
        x0 = batch["initial_states"].to(device, dtype)
        target = batch["target_states"].to(device, dtype)
        U = model(x0, target).controls
        costs, errors = iteration_costs(problem, U[:, None], x0, target, dynamics_fn, cost_params)
        totals["success"] += (errors < problem.success_tol).sum().item()
        totals["final_error"] += errors.sum().item()
        totals["cost"] += costs.sum().item()
        totals["expert_cost"] += batch["costs"].sum().item() if "costs" in batch else math.nan
        n += x0.shape[0]
    if n == 0:
        raise TRCError("the validation data is empty")
    out = {k: v / n for k, v in totals.items()}
    expert = out.pop("expert_cost")
    if math.isfinite(expert) and cost_params is None:
        out["cost_over_expert"] = out["cost"] / expert
    return out


class ProcessSupervisionObjective:
    """``objective(model, batch) -> (loss, parts)`` for :class:`~trc.trainer.Trainer`.

    The model runs with all iterations; a value head, when the model carries
    one as ``model.value_predictor``, is trained on every iterate's cost.
    """

    def __init__(self, problem, process_weight: float, variant: str = DEFAULT_VARIANT,
                 dynamics_fn: Callable | None = None, cost_params: Mapping | None = None,
                 value_weight: float = 0.01):
        self.problem, self.weight, self.variant = problem, process_weight, variant
        self.dynamics_fn, self.cost_params, self.value_weight = dynamics_fn, cost_params, value_weight

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor]):
        out = model(batch["initial_states"], batch["target_states"], return_all_iterations=True)
        return self.loss_of(out, batch, getattr(model, "value_predictor", None))

    def loss_of(self, out, batch: Mapping[str, Tensor], value_predictor: nn.Module | None = None):
        """The loss of a model output (``all_controls``, ``all_latents``) on ``batch``."""
        return compute_process_supervision_loss(
            self.problem, out.all_controls, batch["control_sequences"], batch["initial_states"],
            batch["target_states"], self.weight, dynamics_fn=self.dynamics_fn, cost_params=self.cost_params,
            variant=self.variant, value_predictor=value_predictor, all_latents=out.all_latents,
            value_weight=self.value_weight)


def checkpoint_io(metadata: Mapping[str, Any]):
    """``(save_fn, load_fn)`` for the trainer: :mod:`trc.checkpoint`'s format with the trainer state."""
    from trc.checkpoint import read_checkpoint, save_checkpoint

    def save_fn(model: nn.Module, path: Path, state: dict) -> None:
        save_checkpoint(model, path, trainer_state=state, **metadata)

    def load_fn(path: Path) -> tuple[dict, dict]:
        ckpt = read_checkpoint(path)
        if "trainer_state" not in ckpt:
            raise TRCError(f"checkpoint {str(path)!r} has no trainer state to resume from")
        state = dict(ckpt["state_dict"])
        if "value_predictor" in ckpt:  # a submodule while training
            state.update({f"value_predictor.{k}": v for k, v in ckpt["value_predictor"]["state_dict"].items()})
        return state, ckpt["trainer_state"]

    return save_fn, load_fn


def train_with_process_supervision(
    model: nn.Module,
    train_loader,
    val_loader=None,
    dynamics_fn: Callable | None = None,
    epochs: int = 250,
    lr: float = 3e-3,
    process_weight: float = 1.0,
    value_predictor: nn.Module | None = None,
    value_weight: float = 0.01,
    cost_params: Mapping | None = None,
    variant: str = DEFAULT_VARIANT,
    output_dir: str | Path | None = None,
    resume: bool = False,
    metadata: Mapping[str, Any] | None = None,
    **config: Any,
) -> nn.Module:
    """Train ``model`` on expert demonstrations plus the cost of every refinement iterate.

    Loss: :func:`trc.losses.compute_process_supervision_loss` (an imitation term plus
    ``process_weight`` times a term on the iterates' costs; behavior cloning of every
    iterate when ``process_weight = 0``).  Validation after every epoch measures the
    final controls (:func:`validation_metrics`); the best epoch (lowest validation cost)
    is kept.  Build the model with ``use_gradient_truncation=True`` (as :func:`build_model`
    does): each iteration is then trained as a step of its own, and the losses' gradients
    are exact although the simulator feedback carries none.

    Args:
        model: a :class:`~trc.model.TinyRecursiveControl`; ``model.problem`` supplies the
            bound, the cost and the simulator.
        train_loader: dict batches (``trc.data.make_loader``).
        val_loader: dict batches for validation, or None (the best epoch is then the lowest
            training loss).
        dynamics_fn: ``(x0, U) -> X`` replacing the problem's rollout in loss and validation.
        epochs, lr: passes over the data and peak learning rate.
        process_weight: ``lambda >= 0``; 0 is behavior cloning.
        value_predictor: optional value head, trained on every iterate's cost and saved with
            the model (as ``model.value_predictor``).
        value_weight: weight of the value loss.
        cost_params: optional ``Q``, ``R``, ``Q_final`` replacing the problem's.
        variant: process term, a key of :data:`trc.losses.PROCESS_VARIANTS`.
        output_dir: where ``best_model.pt`` and ``last_model.pt`` go; None writes nothing.
        resume: continue from ``output_dir/last_model.pt`` when it exists.
        metadata: extra JSON-able entries stored in the checkpoints.
        **config: further :class:`~trc.trainer.TrainConfig` fields (``weight_decay``,
            ``grad_clip``, ``patience``, ``seed``, ``device``, ``progress`` ...).

    Returns:
        The trained model (best epoch's weights), with the history as ``model.training_history``.
    """
    if not (math.isfinite(process_weight) and process_weight >= 0):
        raise TRCError(f"process_weight must be a finite number >= 0, got {process_weight}")
    if not (math.isfinite(value_weight) and value_weight >= 0):
        raise TRCError(f"value_weight must be a finite number >= 0, got {value_weight}")
    if value_predictor is not None:
        model.value_predictor = value_predictor
    problem = model.problem
    monitor = "cost" if val_loader is not None else "loss"
    cfg = TrainConfig(epochs=epochs, lr=lr, monitor=monitor, mode="min",
                      checkpoint_dir=None if output_dir is None else str(output_dir), **config)
    meta = {"process_weight": process_weight, "variant": variant, "value_weight": value_weight,
            "epochs": epochs, "lr": lr, **(metadata or {})}
    save_fn, load_fn = checkpoint_io(meta)
    objective = ProcessSupervisionObjective(problem, process_weight, variant, dynamics_fn, cost_params,
                                            value_weight)
    val_fn = None if val_loader is None else (
        lambda m: validation_metrics(m, val_loader, dynamics_fn, cost_params))
    history = Trainer(cfg, save_fn, load_fn).fit(model, objective, train_loader, val_fn, resume=resume)
    model.training_history = history
    model.eval()
    return model


def train_behavior_cloning(model: nn.Module, train_loader, val_loader=None, epochs: int = 250,
                           lr: float = 3e-3, **kwargs: Any) -> nn.Module:
    """Train ``model`` to imitate the expert's controls at every iterate (``mean_k MSE(U_k, expert)``).

    The same trainer, validation and checkpoints as :func:`train_with_process_supervision`
    with ``process_weight = 0`` (which also takes the remaining keyword arguments).
    """
    return train_with_process_supervision(model, train_loader, val_loader, epochs=epochs, lr=lr,
                                          process_weight=0.0, **kwargs)


# -- the command line ------------------------------------------------------------------------------


def build_model(problem, model_size: str = "small", use_two_level: bool = False, H_cycles: int | None = None,
                L_cycles: int | None = None, iterations: int | None = None):
    """The model the ``trc train`` flags describe: a preset, with the cycles and K changed if given.

    Gradient truncation is always on: each refinement iteration is then trained as a step of
    its own (TRM's deep supervision), which is what makes the per-iterate losses of
    :mod:`trc.losses` exact: the simulator feedback an iteration reads carries no gradient.
    """
    from trc.model import TinyRecursiveControl

    preset = f"two_level_{model_size}" if use_two_level else model_size
    overrides = {k: v for k, v in (("H_cycles", H_cycles), ("L_cycles", L_cycles),
                                   ("num_outer_cycles", iterations)) if v is not None}
    return TinyRecursiveControl.from_preset(preset, problem, use_gradient_truncation=True, **overrides)


def add_train_command(sub) -> None:
    """Add ``trc train`` to the CLI's subparsers."""
    p = sub.add_parser(
        "train", help="train a model by behavior cloning or process supervision",
        description="Train a Tiny Recursive Control model on a dataset of expert demonstrations. "
                    "With --process_weight 0 every iterate imitates the expert (behavior cloning); "
                    "otherwise an imitation term plus --process_weight times a term on every refinement "
                    "iterate's cost (see --loss_variant). The defaults are the settings measured in "
                    "benchmarks/vanderpol.py. Writes best_model.pt, last_model.pt and history.json "
                    "into --output_dir.")
    p.add_argument("--data", required=True, help="dataset .npz written by trc generate")
    p.add_argument("--problem", default=None, help="problem name (default: the dataset's); must match the dataset")
    p.add_argument("--output_dir", required=True, help="folder for best_model.pt, last_model.pt, history.json")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="passes over the training data (default %(default)s)")
    p.add_argument("--batch_size", type=int, default=DEFAULTS["batch_size"], help="samples per step (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="peak learning rate, AdamW with warmup and cosine decay (default %(default)s)")
    p.add_argument("--process_weight", type=float, default=DEFAULTS["process_weight"],
                   help="lambda >= 0, weight of the process term (0: behavior cloning; default %(default)s)")
    p.add_argument("--loss_variant", choices=sorted(PROCESS_VARIANTS), default=DEFAULT_VARIANT,
                   help="'monotone' (default): the expert teaches the first guess, the cost every refinement, "
                        "each iterate relative to the one before, and every sample is charged for a refinement "
                        "that does not improve it; 'ratio': the same without that charge, which goes further "
                        "where the teacher is weak; "
                        "'seed': the seed document's formula")
    p.add_argument("--model_size", choices=("small", "medium", "large"), default=DEFAULTS["model_size"],
                   help="model preset size (default %(default)s)")
    p.add_argument("--use_two_level", action="store_true", help="two-level z_H/z_L reasoning (TRM)")
    p.add_argument("--H_cycles", type=int, default=None, help="cycles per refinement iteration (default: preset's)")
    p.add_argument("--L_cycles", type=int, default=None, help="low-level updates per cycle (default: preset's)")
    p.add_argument("--iterations", type=int, default=DEFAULTS["iterations"], help="refinement iterations K (default %(default)s)")
    p.add_argument("--use_value_predictor", action="store_true", help="train a value head with the model")
    p.add_argument("--value_weight", type=float, default=None,
                   help="weight of the value loss (default 0.01; needs --use_value_predictor)")
    p.add_argument("--val_fraction", type=float, default=DEFAULTS["val_fraction"],
                   help="fraction of the dataset held out for validation (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the model and the training")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from --output_dir/last_model.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train_command)


# The settings measured in benchmarks/vanderpol.py (Van der Pol, 1000 LQR demonstrations): a small
# model trained long beats a big one trained briefly; K = 2 keeps more samples improving at every
# iteration than K = 3 at the same cost; behavior cloning needs the 250 epochs to pass 95 % success.
DEFAULTS: dict[str, Any] = {"epochs": 250, "batch_size": 64, "lr": 3e-3, "process_weight": 1.0,
                            "model_size": "small", "iterations": 2, "val_fraction": 0.1}
RESUME_KEYS = ("data", "problem", "epochs", "batch_size", "lr", "process_weight", "loss_variant", "model_size",
               "use_two_level", "H_cycles", "L_cycles", "iterations", "use_value_predictor", "value_weight",
               "val_fraction", "seed")


def _check_args(args: argparse.Namespace) -> None:
    """One sentence for the first bad flag."""
    checks = [
        (args.epochs > 0, f"--epochs must be > 0, got {args.epochs}"),
        (args.batch_size > 0, f"--batch_size must be > 0, got {args.batch_size}"),
        (math.isfinite(args.lr) and args.lr > 0, f"--lr must be a positive number, got {args.lr}"),
        (math.isfinite(args.process_weight) and args.process_weight >= 0,
         f"--process_weight must be a finite number >= 0, got {args.process_weight}"),
        (args.value_weight is None or args.use_value_predictor, "--value_weight needs --use_value_predictor"),
        (args.value_weight is None or (math.isfinite(args.value_weight) and args.value_weight >= 0),
         f"--value_weight must be a finite number >= 0, got {args.value_weight}"),
        (0 < args.val_fraction < 1, f"--val_fraction must be between 0 and 1, got {args.val_fraction}"),
        (args.loss_variant == DEFAULT_VARIANT or args.process_weight > 0,
         "--loss_variant has no effect with --process_weight 0"),
    ]
    for name in ("H_cycles", "L_cycles"):
        value = getattr(args, name)
        checks.append((value is None or value > 0, f"--{name} must be > 0, got {value}"))
    checks.append((args.iterations > 0, f"--iterations must be > 0, got {args.iterations}"))
    for ok, message in checks:
        if not ok:
            raise TRCError(message)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise TRCError(f"--device {args.device!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TRCError(f"--device {args.device!r} asks for CUDA, which this machine does not have")


def train_command(args: argparse.Namespace) -> int:
    """``trc train``: validate the flags and the dataset, train, write checkpoints and history."""
    from trc.data import check_dataset, dataset_problem, load_dataset, make_loader, split_dataset
    from trc.problems import get_problem
    from trc.value import create_value_predictor

    _check_args(args)
    data = load_dataset(args.data)
    if "problem" in data["metadata"]:
        problem = dataset_problem(data)
        if args.problem is not None and args.problem != problem.name:
            raise TRCError(f"dataset {args.data!r} was made for problem {problem.name!r}, not {args.problem!r}")
    elif args.problem is None:
        raise TRCError(f"dataset {args.data!r} does not name its problem; pass --problem")
    else:
        problem = get_problem(args.problem)
    check_dataset(data, f"dataset {args.data!r}", problem)
    out = Path(args.output_dir)
    settings = {k: getattr(args, k) for k in RESUME_KEYS}
    settings["problem"] = problem.to_dict()
    if args.resume and (out / "last_model.pt").exists():
        from trc.checkpoint import read_checkpoint

        before = read_checkpoint(out / "last_model.pt")["metadata"].get("settings", {})
        changed = [k for k in RESUME_KEYS if before.get(k) != settings[k]]
        if changed:
            raise TRCError(f"cannot resume from {str(out / 'last_model.pt')!r}: it was trained with "
                           f"--{changed[0]} {before.get(changed[0])!r}, not {settings[changed[0]]!r}")

    train, val = split_dataset(data, args.val_fraction, args.seed)
    torch.manual_seed(args.seed)
    model = build_model(problem, args.model_size, args.use_two_level, args.H_cycles, args.L_cycles, args.iterations)
    value_predictor = create_value_predictor(model.config.latent_dim) if args.use_value_predictor else None
    model = train_with_process_supervision(
        model, make_loader(train, args.batch_size, shuffle=True, seed=args.seed),
        make_loader(val, 256, shuffle=False), epochs=args.epochs, lr=args.lr,
        process_weight=args.process_weight, value_predictor=value_predictor,
        value_weight=0.01 if args.value_weight is None else args.value_weight, variant=args.loss_variant,
        output_dir=out, resume=args.resume, metadata={"settings": settings}, seed=args.seed,
        device=args.device, progress=not args.quiet)
    history = model.training_history
    atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
    best = history["epochs"][history["best_epoch"]]["val"] if history["best_epoch"] is not None else None
    if history["stop_reason"]:
        print(f"trc train: stopped early: {history['stop_reason']}")
    if best is not None:
        print(f"trc train: best epoch {history['best_epoch']}: success {100 * best['success']:.1f}%, "
              f"mean cost {best['cost']:.4g}; wrote {out / 'best_model.pt'}")
    return 0
