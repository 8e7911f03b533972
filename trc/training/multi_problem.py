"""Training one :class:`~trc.models.multi_problem.MultiProblemTRC` on several problems.

Every batch holds one problem: :class:`MultiProblemData` interleaves the problems' own
training batches (plain demonstrations or :class:`~trc.training.selfplay.SelfPlayData`, as
each problem's recipe says) in a random order, so an epoch is one pass over every problem's
data, and :class:`MultiProblemObjective` trains the batch's problem planner with that
problem's own objective (its simulator, cost, bound, horizon and loss variant).  The problems'
losses differ by orders of magnitude, and the shared optimizer's step sizes follow the largest
gradients; with ``balance="log"`` (the default) every batch is trained on ``log L_p``, whose
gradient ``grad L_p / L_p`` is its problem's loss relative to its own level, so no problem's
scale sets the step sizes for the others (see :data:`BALANCES`), and AdamW keeps its moment
estimates per problem (the trainer's ``optimizer_key`` hook), so every problem's steps are scaled
by its own gradients: with one set of moments shared, the problem of the largest gradients (the
pendulum imitating its self-play archive) shrank every other problem's steps.  Validation
runs :func:`~trc.training.supervised_trainer.validation_metrics` per problem and reports
each problem's figures as ``"<problem>/<metric>"`` and their means over the problems; the
best epoch has the lowest mean cost over the expert's (``picked_cost_over_expert``, a figure of
the same scale on every problem) among the problems judged by their open-loop plans: a problem
whose recipe judges it as a controller replanning in closed loop (the pendulum) is left out,
as its open-loop cost says little about that and swings most between epochs (measured in
:func:`multi_train_command`).

After the epochs, :func:`multi_train_command` tunes the problems judged in closed loop there,
each through its own adapter (:mod:`trc.training.adapter_tuning`), the others' plans unchanged;
then the problems whose recipe gives ``adapter_epochs`` (the double integrator's, in a model of
several problems) on their own objective, the same way.

``trc train --problem a,b --data a.npz,b.npz`` runs :func:`multi_train_command`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from trc.errors import TRCError
from trc.training.supervised_trainer import (ProcessSupervisionObjective, checkpoint_io, heads_only_validation,
                                           mean_loss, validation_metrics)
from trc.training.trainer import TrainConfig, Trainer

Tensor = torch.Tensor


class MultiProblemData:
    """Batches ``{"problem": i, "batch": b}``: every batch of every problem's loader once per epoch,
    the problems interleaved in a random order.

    Args:
        loaders: one iterable of batches per problem, in the model's problem order; a loader
            with ``refresh(model, epoch)`` (self-play) is refreshed with its problem's planner.
        seed: seeds the interleaving (the trainer reseeds it, and the loaders, every epoch).
    """

    def __init__(self, loaders: Sequence, seed: int = 0):
        if not loaders:
            raise TRCError("multi-problem data needs at least one loader")
        self.loaders = list(loaders)
        self.generator = torch.Generator().manual_seed(seed)
        self.horizons: list[int | None] = [None] * len(self.loaders)

    def __len__(self) -> int:
        return sum(len(loader) for loader in self.loaders)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = torch.cat([torch.full((len(loader),), i) for i, loader in enumerate(self.loaders)])
        order = order[torch.randperm(len(order), generator=self.generator)]
        batches = [iter(loader) for loader in self.loaders]
        for i in order.tolist():
            yield {"problem": i, "batch": next(batches[i])}

    def refresh(self, model, epoch: int) -> None:
        """Refresh every self-play loader with its problem's planner; note each one's horizon."""
        for i, loader in enumerate(self.loaders):
            if hasattr(loader, "refresh"):
                loader.refresh(model.planner(i), epoch)
                self.horizons[i] = loader.horizon

    @property
    def log(self) -> list[dict]:
        """The self-play loaders' records, each with its ``problem`` id."""
        return [{"problem": i, **r} for i, loader in enumerate(self.loaders) for r in getattr(loader, "log", [])]

    def state_dict(self) -> dict:
        return {"loaders": [loader.state_dict() if hasattr(loader, "state_dict") else {} for loader in self.loaders]}

    def load_state_dict(self, state: dict) -> None:
        for loader, s in zip(self.loaders, state["loaders"]):
            if hasattr(loader, "load_state_dict"):
                loader.load_state_dict(s)


# How the problems' losses L_p share the network: the loss the trainer backpropagates for a batch of problem p.
# Measured on benchmarks/multi_problem.py's data and test starts (1000 demonstrations per problem, lr 1e-3, seed 0):
# at 120 epochs 'none' reached 96.9 % (Van der Pol) and 51.6 % (constrained) success at 1.049x and 1.052x the
# optimum, 'log' 98.3 % and 66.4 % at 1.021x and 1.021x; at 250 epochs 'none' 98.6 % and 61.3 % at 1.023x and
# 1.029x, 'log' 99.7 % and 74.7 % at 1.009x and 1.011x.
BALANCES: dict[str, Callable[[Tensor], Tensor]] = {
    "log": torch.log,            # gradient grad L_p / L_p: each problem relative to its own loss (L_p > 0)
    "none": lambda loss: loss,   # the losses as they are: the largest sets the shared optimizer's steps
}
DEFAULT_BALANCE = "log"


class MultiProblemObjective:
    """``objective(model, batch)``: the batch's problem objective on that problem's planner.

    Args:
        objectives: one ``objective(planner, batch) -> (loss, parts)`` per problem, in the model's order
            (:class:`~trc.training.supervised_trainer.ProcessSupervisionObjective` or
            :class:`~trc.training.deep_supervision.DeepSupervisionObjective`, which backpropagates
            its pieces itself and so takes only ``balance="none"``).
        balance: a key of :data:`BALANCES`; the loss returned is ``BALANCES[balance](L_p)`` and the
            parts carry ``L_p`` as ``problem_loss``.
    """

    def __init__(self, objectives: Sequence, balance: str = DEFAULT_BALANCE):
        if balance not in BALANCES:
            raise TRCError(f"unknown balance {balance!r}; known: {', '.join(BALANCES)}")
        self.objectives, self.balance = list(objectives), balance

    def __call__(self, model: nn.Module, batch: Mapping[str, Any]):
        i = int(batch["problem"])
        loss, parts = self.objectives[i](model.planner(i), batch["batch"])
        return BALANCES[self.balance](loss), {**parts, "problem_loss": loss.detach()}


def multi_validation_metrics(model, val_loaders: Sequence, picked: Sequence[int] | None = None) -> dict[str, float]:
    """Each problem's :func:`~trc.training.supervised_trainer.validation_metrics` as
    ``"<problem>/<metric>"``; ``success``, ``cost_over_expert`` (and a halting model's
    ``iterations``) as means over the problems; ``picked_cost_over_expert``, the mean cost over
    the expert's of the problems ``picked`` (indices; None: all), which picks the best epoch."""
    out: dict[str, float] = {}
    per = [validation_metrics(model.planner(i), loader) for i, loader in enumerate(val_loaders)]
    for problem, metrics in zip(model.problems, per):
        out.update({f"{problem.name}/{k}": v for k, v in metrics.items()})
    for key in ("success", "cost_over_expert", "iterations"):
        if all(key in m for m in per):
            out[key] = sum(m[key] for m in per) / len(per)
    chosen = [per[i] for i in (range(len(per)) if picked is None else picked)]
    if chosen and all("cost_over_expert" in m for m in chosen):
        out["picked_cost_over_expert"] = sum(m["cost_over_expert"] for m in chosen) / len(chosen)
    return out


def train_multi_problem(model, train_loaders: Sequence, val_loaders: Sequence | None = None, epochs: int = 100,
                        lr: float = 3e-3, process_weight: float = 1.0, variants: Sequence[str] | str = "monotone",
                        output_dir: str | Path | None = None, resume: bool = False,
                        metadata: Mapping[str, Any] | None = None, hooks: Mapping[str, Callable] | None = None,
                        final_only: bool = False, halt_tolerance: float | None = None,
                        balance: str = DEFAULT_BALANCE, picked: Sequence[int] | None = None, **config: Any):
    """Train a :class:`~trc.models.multi_problem.MultiProblemTRC` on every problem's data.

    Args:
        model: the multi-problem model.
        train_loaders: one loader per problem, in ``model.problems`` order (demonstration batches
            or :class:`~trc.training.selfplay.SelfPlayData`).
        val_loaders: one validation loader per problem, or None (the best epoch is then the lowest loss).
        variants: the loss variant, one for all problems or one per problem.
        process_weight: the process term's weight, one for all problems or one per problem.
        balance: how the problems' losses share the network, a key of :data:`BALANCES`; a halting
            model (whose objective backpropagates its pieces itself) takes ``"none"``.
        picked: the problems (indices) whose mean validation cost over the expert's picks the best
            epoch; None: all.
        final_only, halt_tolerance, output_dir, resume, metadata, hooks, **config:
            as in :func:`~trc.training.supervised_trainer.train_with_process_supervision`.

    Returns:
        The trained model (best epoch's weights) with ``training_history``.
    """
    P = len(model.problems)
    variants = [variants] * P if isinstance(variants, str) else list(variants)
    weights = [process_weight] * P if isinstance(process_weight, (int, float)) else list(process_weight)
    for loaders, what in ((train_loaders, "training loaders"), (val_loaders, "validation loaders"),
                          (variants, "loss variants"), (weights, "process weights")):
        if loaders is not None and len(loaders) != P:
            raise TRCError(f"{len(loaders)} {what} for {P} problems; one per problem")
    if picked is not None and (not picked or not all(0 <= i < P for i in picked)):
        raise TRCError(f"picked problems {list(picked)} are not a non-empty list of indices below {P}")
    planners = [model.planner(i) for i in range(P)]
    meta = {"process_weight": weights, "variant": variants, "final_only": bool(final_only), "epochs": epochs,
            "lr": lr, "balance": balance, **(metadata or {})}
    if model.config.use_halting and balance != "none":
        raise TRCError(f"a halting model trains with balance 'none' (its objective backpropagates each iteration "
                       f"itself), not {balance!r}")
    if model.config.use_halting:
        from trc.models.halting import DEFAULT_TOLERANCE
        from trc.training.deep_supervision import DeepSupervisionObjective

        meta["halt_tolerance"] = tol = DEFAULT_TOLERANCE if halt_tolerance is None else halt_tolerance
        objectives = [DeepSupervisionObjective(p.problem, w, v, tol=tol)
                      for p, w, v in zip(planners, weights, variants)]
    else:
        objectives = [ProcessSupervisionObjective(p.problem, w, v, final_only=final_only)
                      for p, w, v in zip(planners, weights, variants)]
    data = MultiProblemData(train_loaders, seed=config.get("seed", 0))
    monitor = "picked_cost_over_expert" if val_loaders is not None else "loss"
    val_fn = None if val_loaders is None else (lambda m: multi_validation_metrics(m, val_loaders, picked))
    heads = heads_only_validation(model, val_fn, lambda m: sum(
        mean_loss(o, m.planner(i), v) for i, (o, v) in enumerate(zip(objectives, val_loaders))) / P)
    if heads is not None:
        monitor, val_fn = "loss", heads
    cfg = TrainConfig(epochs=epochs, lr=lr, monitor=monitor, mode="min",
                      checkpoint_dir=None if output_dir is None else str(output_dir), **config)
    hooks = dict(hooks or {})
    given = hooks.get("on_epoch_start")

    def on_epoch_start(epoch: int) -> None:
        data.refresh(model, epoch)
        for objective, horizon in zip(objectives, data.horizons):
            objective.horizon = horizon
        if given is not None:
            given(epoch)

    hooks.update(on_epoch_start=on_epoch_start, state_dict=data.state_dict, load_state_dict=data.load_state_dict,
                 optimizer_key=lambda batch: int(batch["problem"]))
    save_fn, load_fn = checkpoint_io(meta)
    history = Trainer(cfg, save_fn, load_fn).fit(model, MultiProblemObjective(objectives, balance), data, val_fn,
                                                 hooks=hooks, resume=resume)
    history["selfplay_log"] = data.log
    model.training_history = history
    model.eval()
    return model


def split_list(value: str | None, flag: str) -> list[str] | None:
    """``"a,b"`` as ``["a", "b"]``; an empty item is an error."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",")]
    if not all(items):
        raise TRCError(f"{flag} {value!r} has an empty item; give comma-separated names")
    return items


def dataset_pairs(data: str, problem: str | None) -> list[tuple[str, str | None]]:
    """``--data a.npz,b.npz --problem a,b`` as ``[(path, name or None), ...]``, one per dataset."""
    paths, names = split_list(data, "--data"), split_list(problem, "--problem")
    if len(paths) > 1 and Path(data).is_file() and not all(Path(p).exists() for p in paths):
        raise TRCError(f"--data is split at commas, one dataset per problem, and {data!r} is one file: "
                       f"rename it without a comma")
    if names is not None and len(names) != len(paths):
        raise TRCError(f"--problem names {len(names)} problems but --data gives {len(paths)} datasets; "
                       f"give one dataset per problem, in the same order")
    return list(zip(paths, names or [None] * len(paths)))


def multi_train_command(args: argparse.Namespace, hooks: dict | None = None) -> int:
    """``trc train --problem a,b --data a.npz,b.npz``: one model for all the problems.

    Each problem takes its recipe's self-play and curriculum settings, process weight, loss variant and
    tunings (flags given apply to all): the problems judged in closed loop are tuned there, the others
    with ``adapter_epochs`` on their own objective, each through its own adapter; the epochs are
    ``--epochs`` (default
    :data:`MULTI_PROBLEM_EPOCHS`), the balance ``--problem_balance`` (default
    :data:`DEFAULT_BALANCE`; ``"none"`` with ``--act``).  Writes what a single-problem run writes.
    """
    from trc.data.datasets import dataset_digest, load_training_data, make_loader, split_dataset
    from trc.training.recipe import RECIPE, build_training_data, judged_in_closed_loop, recipe, recipe_flags
    from trc.training.train import (DEFAULTS, RESUME_KEYS, _check_run_folder, build_model, check_run_writable,
                                    init_weights, planner_facts, resumed_checkpoint)
    from trc.io import atomic_write

    pairs = dataset_pairs(args.data, args.problem)
    if args.use_value_predictor:
        raise TRCError("--use_value_predictor trains single-problem models only")
    out = Path(args.output_dir)
    check_run_writable(out)
    problems, datasets = [], []
    for path, name in pairs:
        data, problem = load_training_data(path, name, " (--problem and --data pair up in order)")
        problems.append(problem)
        datasets.append(data)
    recipes = [recipe(p.name, multi=True, **recipe_flags(args)) for p in problems]
    # tuned in closed loop through their own adapters: the problems judged there (--closed_loop_steps, given, sets
    # how long, not which)
    tuned = [i for i, (p, r) in enumerate(zip(problems, recipes))
             if r["closed_loop_steps"] and judged_in_closed_loop(p.name)]
    # tuned on their own objective through their own adapters: the problems judged by their open-loop plans
    refined = [i for i, (p, r) in enumerate(zip(problems, recipes))
               if r["adapter_epochs"] and not judged_in_closed_loop(p.name)]
    if any(r["closed_loop_critic"] > 0 and not r["closed_loop_truncate"] for i, r in enumerate(recipes) if i in tuned):
        raise TRCError("--closed_loop_critic needs --closed_loop_truncate > 0: the critic values the state at each cut")
    epochs = args.epochs if args.epochs is not None else MULTI_PROBLEM_EPOCHS
    args.epochs = epochs
    if args.lr is None:
        args.lr = MULTI_PROBLEM_LR
    if args.problem_balance is None:
        args.problem_balance = "none" if args.act else DEFAULT_BALANCE
    settings = {k: getattr(args, k) for k in RESUME_KEYS if hasattr(args, k)}
    settings.update({k: [r[k] for r in recipes] for k in RECIPE
                     if k not in ("epochs", "val_closed_loop")})
    settings.update(problem=[p.to_dict() for p in problems], data=args.data,
                    data_sha256=",".join(dataset_digest(d) for d in datasets), epochs=epochs)
    _check_run_folder(out, settings, args.resume, epochs)
    torch.manual_seed(args.seed)
    K = (args.max_iterations or DEFAULTS["max_iterations"]) if args.act else args.iterations
    from trc.models.checkpoint import read_checkpoint
    from trc.training.adapter_tuning import ADAPTER_RANK

    # the adapters of the planner it starts from, else new ones where a problem will be tuned
    resumed = resumed_checkpoint(args)
    if resumed is not None:   # the run's own adapters, whatever the flags now ask
        rank = read_checkpoint(resumed)["config"].get("adapter_rank", 0)
        if (tuned or refined) and not rank:
            raise TRCError(f"cannot resume {str(out)!r}: it was trained without the tunings' adapters "
                           f"(--closed_loop_steps 0 --adapter_epochs 0); pass those flags again, or train afresh "
                           f"in another --output_dir")
    else:
        rank = (0 if args.init_from is None else read_checkpoint(args.init_from)["config"].get("adapter_rank", 0)) \
            or (ADAPTER_RANK if tuned or refined else 0)
    model = build_model(problems, args.model_size, args.use_two_level, args.H_cycles, args.L_cycles, K,
                        gradient_truncation=(None if args.gradient_truncation else False) if args.baseline
                        else args.gradient_truncation, halting=args.act, adapter_rank=rank)
    if args.init_from is not None and resumed is None:
        init_weights(model, args.init_from)
    if args.heads_only:
        from trc.training.deep_supervision import freeze_planner

        freeze_planner(model)
    train_loaders, val_loaders, val_sets = [], [], []
    for problem, data, r in zip(problems, datasets, recipes):
        train, val = split_dataset(data, args.val_fraction, args.seed)
        val_sets.append(val)
        train_loaders.append(build_training_data(problem, train, args.batch_size, r, args.seed, epochs)
                             or make_loader(train, args.batch_size, shuffle=True, seed=args.seed))
        val_loaders.append(make_loader(val, 256, shuffle=False))
    # The best epoch is picked on the problems judged by their open-loop plans.  Measured in
    # benchmarks/multi_problem.py, seeds 0-2, the four shipped problems, 300 epochs: with the pendulum's open-loop
    # cost in the mean, the picks (epochs 254, 234, 190) fell where that cost dipped; without it they fall on epochs
    # 299, 297 and 295, better on the double integrator (test starts: 99.2 / 98.6 / 94.2 % success before, 99.3 /
    # 99.5 / 96.7 % after) and on Van der Pol's cost (1.0077 / 1.0089 / 1.0117x before, 1.0070 / 1.0070 / 1.0080x).
    open_loop = [i for i, p in enumerate(problems) if not judged_in_closed_loop(p.name)]
    model = train_multi_problem(
        model, train_loaders, val_loaders, epochs=epochs, lr=args.lr,
        process_weight=[r["process_weight"] for r in recipes],
        variants=[r["loss_variant"] for r in recipes], output_dir=out, resume=args.resume,
        metadata={"settings": settings, **planner_facts(args)}, hooks=hooks, final_only=args.baseline,
        halt_tolerance=args.halt_tolerance, balance=args.problem_balance, picked=open_loop or None, seed=args.seed,
        device=args.device, progress=not args.quiet)
    history = model.training_history
    stop = history["stop_reason"]
    if (tuned or refined) and not (stop and stop.startswith("non-finite")):
        from trc.models.checkpoint import save_checkpoint

        best = _untuned_best(model, out)
        kept = {}
        if tuned:
            history["closed_loop_tuning"], kept["closed_loop_tuning"] = _tune_in_closed_loop(
                model, [problems[i].name for i in tuned], [val_sets[i] for i in tuned], [recipes[i] for i in tuned],
                args, out, best["metadata"])
        if refined:  # after the closed loop's: resuming that restores its saved weights, these rows included
            history["adapter_tuning"], kept["adapter_tuning"] = _tune_open_loop(
                model, [problems[i].name for i in refined], [train_loaders[i] for i in refined],
                [val_loaders[i] for i in refined], [recipes[i] for i in refined], args, out, best["metadata"])
        # with the best epoch's trainer state, which --resume reads from it, and this run's settings (a resumed
        # run may tune longer than the run that wrote the best epoch)
        save_checkpoint(model, out / "best_model.pt", trainer_state=best.get("trainer_state"),
                        **{**best["metadata"], "settings": settings, **kept})
    atomic_write(out / "history.json", lambda tmp: Path(tmp).write_text(json.dumps(history, indent=1)))
    if stop and stop.startswith("non-finite"):
        kept = ("no checkpoint was written" if history["best_epoch"] is None
                else f"the checkpoints of the epochs before are kept in {str(out)!r}")
        raise TRCError(f"training stopped: {stop} (a too large --lr?); {kept}")
    if stop:
        print(f"trc train: stopped early: {stop}")
    if history["best_epoch"] is not None:
        best = history["epochs"][history["best_epoch"]]["val"]
        for p in problems:
            its = best.get(f"{p.name}/iterations")
            print(f"trc train: {p.name}: success {100 * best[f'{p.name}/success']:.1f}%, cost / expert "
                  f"{best.get(f'{p.name}/cost_over_expert', math.nan):.4f}"
                  + ("" if its is None else f", {its:.2f} iterations per start"))
        on = "" if len(open_loop) in (0, len(problems)) else \
            f" (picked on {', '.join(problems[i].name for i in open_loop)}: the others are judged in closed loop)"
        print(f"trc train: best epoch {history['best_epoch']}{on}; wrote {out / 'best_model.pt'}")
    if tuned:
        from trc.training.closed_loop_tuning import kept_record

        for name, log in history["closed_loop_tuning"].items():
            kept = kept_record(log)
            print(f"trc train: {name}: its own adapter, embedding row and biases tuned in closed loop; kept step "
                  f"{kept['step']} of {max(r['step'] for r in log)}: closed-loop success "
                  f"{100 * kept['success']:.1f}%, mean cost {kept['cost']:.4g} on the validation starts; "
                  f"best_model.pt holds it")
    if "adapter_tuning" in history:
        from trc.training.adapter_tuning import kept_epoch

        for name, log in history["adapter_tuning"].items():
            kept = kept_epoch(log)
            print(f"trc train: {name}: its own adapter, embedding row and biases tuned {len(log) - 1} epochs on its "
                  f"objective; kept epoch {kept['epoch']}: success {100 * kept['success']:.1f}%, cost / expert "
                  f"{kept['cost_over_expert']:.4f} (before {log[0]['cost_over_expert']:.4f}); best_model.pt holds it")
    return 0


def _untuned_best(model, out: Path) -> dict:
    """The best epoch's checkpoint as the epochs left it, before any tuning; ``model`` holds its weights.

    The tunings write their result over ``best_model.pt``, so it is first copied to ``best_epoch.pt``.  When
    ``best_model.pt`` is already tuned (a run resumed after its tunings, to tune longer or to train more epochs
    none of which beat the best), the copy is read back: a tuning then starts from the best epoch, never from an
    earlier tuning's result (a run tuned before ``best_epoch.pt`` existed tunes on from that result).
    """
    import shutil

    from trc.io import atomic_write
    from trc.models.checkpoint import read_checkpoint
    from trc.training.train import BEST_EPOCH, TUNING_RECORDS

    best = read_checkpoint(out / "best_model.pt")
    if not set(TUNING_RECORDS) & best["metadata"].keys():
        atomic_write(out / BEST_EPOCH, lambda tmp: shutil.copyfile(out / "best_model.pt", tmp))
    elif (out / BEST_EPOCH).exists():
        best = read_checkpoint(out / BEST_EPOCH)
        model.load_state_dict(best["state_dict"])
    return best


def _tune_in_closed_loop(model, names: Sequence[str], vals: Sequence[dict], recipes: Sequence[dict],
                         args: argparse.Namespace, out: Path, meta: dict) -> tuple[dict[str, list[dict]], dict]:
    """Tune each of the problems ``names`` (in turn) in closed loop through its own adapter, from the best
    epoch (:func:`trc.training.adapter_tuning.tune_problem_in_closed_loop`; ``meta``: the best epoch's
    checkpoint metadata).

    The best epoch, not the last as for one problem: the other problems keep the best epoch's plans, and
    the best epochs fall on the last few of the cosine schedule (299, 297, 295 with seeds 0-2).  The
    tuning's state is saved in ``closed_loop_tuning.pt`` at every validation (each problem's under its
    name), so that ``--resume`` continues it.  Returns every problem's log, and the record of each tuning.
    """
    from trc.models.checkpoint import read_checkpoint, save_checkpoint
    from trc.training.adapter_tuning import ADAPTER_LR, tune_problem_in_closed_loop
    from trc.training.closed_loop_tuning import ClosedLoopTuning
    from trc.training.train import check_tuning_state, tuning_record

    state_path = out / "closed_loop_tuning.pt"
    trained = len(model.training_history["epochs"])  # a state saved after other epochs is not continued
    states: dict = {}
    if args.resume and state_path.exists():
        saved = read_checkpoint(state_path)["trainer_state"]
        states = dict(saved.get("problems", {})) if saved.get("trained_epochs") == trained else {}
    logs, kept = {}, {}
    for name, val, r in zip(names, vals, recipes):
        config = ClosedLoopTuning(steps=r["closed_loop_steps"], replan_every=r["closed_loop_replan"],
                                  truncate=r["closed_loop_truncate"], critic=r["closed_loop_critic"], lr=ADAPTER_LR)
        state = states.get(name)
        if state is not None:
            check_tuning_state(state, config, state_path, f"{name}'s")

        def save(s: dict, name: str = name) -> None:
            states[name] = s
            save_checkpoint(model, state_path, trainer_state={"problems": states, "trained_epochs": trained}, **meta)

        x0 = torch.as_tensor(val["initial_states"], dtype=torch.float64)
        target = torch.as_tensor(val["target_states"], dtype=torch.float64)
        logs[name] = tune_problem_in_closed_loop(model, name, x0, config, seed=args.seed, val_target=target,
                                                 state=state, save=save)
        kept[name] = {**tuning_record(config, logs[name]), "lr": config.lr}
    return logs, kept


def _tune_open_loop(model, names: Sequence[str], train_loaders: Sequence, val_loaders: Sequence,
                    recipes: Sequence[dict], args: argparse.Namespace, out: Path, meta: dict
                    ) -> tuple[dict[str, list[dict]], dict]:
    """Tune each of the problems ``names`` (in turn) on its own objective through its own adapter
    (:func:`trc.training.adapter_tuning.tune_problem_open_loop`, its recipe's ``adapter_epochs``).

    Each problem's tuned rows are saved in ``adapter_tuning.pt`` as soon as it is tuned; ``--resume`` takes
    them from there (for the same epochs of the same run) rather than tuning again.  Returns every
    problem's log, and the record of each tuning.
    """
    from trc.models.checkpoint import read_checkpoint, save_checkpoint
    from trc.training.adapter_tuning import ADAPTER_LR, copy_own_rows, kept_epoch, tune_problem_open_loop
    from trc.training.supervised_trainer import ProcessSupervisionObjective

    state_path = out / "adapter_tuning.pt"
    trained = len(model.training_history["epochs"])  # rows tuned after other epochs are not taken
    records, saved = {}, None
    if args.resume and state_path.exists():
        saved = read_checkpoint(state_path)
        if saved["trainer_state"].get("trained_epochs") == trained:
            records = dict(saved["trainer_state"]["problems"])
    logs, kept = {}, {}
    for name, train, val, r in zip(names, train_loaders, val_loaders, recipes):
        setting = {"epochs": r["adapter_epochs"], "lr": ADAPTER_LR}
        record = records.get(name)
        if record is not None and {k: record[k] for k in setting} == setting:
            copy_own_rows(model, model.planner(name).problem_index, saved["state_dict"])
        else:
            objective = ProcessSupervisionObjective(model.planner(name).problem, r["process_weight"],
                                                    r["loss_variant"], final_only=args.baseline)
            log = tune_problem_open_loop(model, name, objective, train, val, setting["epochs"], setting["lr"],
                                         seed=args.seed, device=args.device)
            records[name] = record = {**setting, "log": log}
            save_checkpoint(model, state_path, trainer_state={"problems": records, "trained_epochs": trained}, **meta)
        logs[name] = record["log"]
        best = kept_epoch(record["log"])
        kept[name] = {**setting, "kept_epoch": best["epoch"], "cost_over_expert": best["cost_over_expert"]}
    return logs, kept


# One pass over every problem's data per epoch.  Measured by benchmarks/multi_problem.py on the four shipped
# problems, 1000 demonstrations each, one thread of a 2-core CPU, seed 0: 120 epochs at the single-problem
# lr 3e-3 reached 95.3 % (Van der Pol) and 45.2 % (constrained) success; the shared network's validation
# curves swung between epochs, and a lower peak lr steadied them (120 epochs at 1e-3: 96.9 % and 51.6 %);
# 250 epochs at 1e-3 reached 98.6 % and 61.3 % in 12 minutes, inside the 20-minute budget.  With the 'log'
# balance (BALANCES) 250 epochs reach 99.7 % and 74.7 % (seed 1: 100.0 % and 71.9 %), 300 epochs 100.0 % and
# 77.8 % (seed 1: 100.0 % and 77.1 %) in 15.5 and 13.6 minutes: 300, the constrained problem's target of 75 % met
# with both seeds (the model and its problems' recipes have grown since: benchmarks/multi_problem.py).
MULTI_PROBLEM_EPOCHS = 300
MULTI_PROBLEM_LR = 1e-3

__all__ = ["BALANCES", "DEFAULT_BALANCE", "MULTI_PROBLEM_EPOCHS", "MULTI_PROBLEM_LR", "MultiProblemData", "MultiProblemObjective", "multi_train_command",
           "multi_validation_metrics", "train_multi_problem"]
