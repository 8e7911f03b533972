"""One experiment, described by a frozen dataclass, run once and cached: train, then evaluate.

An :class:`Experiment` names everything that decides a result: the problem, the
demonstrations (how many, which expert, their seed), the loss (λ, variant, value
head), the model (the ``trc train`` flags that build it) and the training
settings.  Its defaults are the library's training defaults (``trc train`` with
no flag), so ``Experiment()`` is the benchmark's process-supervision run and
``Experiment(process_weight=0.0)`` its behavior-cloning baseline.
:meth:`Experiment.run` does what ``trc train`` does (the same split of the
demonstrations into training and validation data, the same
:func:`trc.training.train.build_model` and trainer) and then measures the trained model with
:class:`~trc.evaluation.refinement_evaluator.RefinementEvaluator` on held-out start states whose
optimum is known::

    result = Experiment(num_train=1000, num_test=1000).run(cache_dir="runs/cache")
    result.summary["success_rate"], result.summary["cost_over_optimum"]

With ``cache_dir`` set, the data and the trained model are kept in
:mod:`trc.book.cache`, named after exactly what made them (every setting and a
fingerprint of the code), so a later run with the same settings only evaluates.
"""

from __future__ import annotations

import dataclasses
import inspect
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from trc.book.cache import cache_key, cached_dataset, cached_model, code_fingerprint
from trc.errors import TRCError, check

TEST_SEED_OFFSET = 1_000_000  # test states are drawn with data_seed + this: never the training states


def _training_defaults() -> dict[str, Any]:
    """The settings ``trc train`` uses when no flag is given (``trc.training.supervised_trainer``)."""
    from trc.training.supervised_trainer import train_with_process_supervision
    from trc.training.train import DEFAULTS

    signature = {name: p.default for name, p in inspect.signature(train_with_process_supervision).parameters.items()
                 if p.default is not inspect.Parameter.empty}
    return {"use_two_level": False, "H_cycles": None, "L_cycles": None, **signature, **DEFAULTS}


_DEFAULTS = _training_defaults()


def _pairs(value: Mapping[str, Any] | tuple) -> tuple[tuple[str, Any], ...]:
    """A mapping as sorted ``(key, value)`` pairs, so that a frozen dataclass can hold and hash it."""
    return tuple(sorted(dict(value).items()))


@dataclass(frozen=True)
class Experiment:
    """What decides one trained model and its evaluation (defaults: the library's training defaults).

    Attributes:
        problem: a registry name (``trc.get_problem``).
        num_train: demonstrations; ``val_fraction`` of them are held out for validation, as in
            ``trc train``.
        num_test: held-out start states the model is evaluated on.
        expert: who demonstrates (``"lqr"`` or ``"optimal"``); the test set holds its plans too.
        process_weight: λ; 0 is behavior cloning.
        variant: the loss variant (``trc.training.process_supervision.PROCESS_VARIANTS``).
        model_size, use_two_level, H_cycles, L_cycles, iterations: the model, as the
            ``trc train`` flags of the same names describe it (:func:`trc.training.train.build_model`;
            None keeps the preset's cycles).
        epochs, batch_size, lr, val_fraction: as in ``trc train``.
        use_value_predictor, value_weight: train a value head with the model.
        recipe: self-play and curriculum settings (keys of :data:`trc.training.recipe.RECIPE` but
            ``epochs``, ``loss_variant`` and ``process_weight``, fields of their own, and ``val_closed_loop``, given
            in ``options``; e.g. ``{"self_play": True, "curriculum_box": 0.3}``); unset
            ones take the recipe's problem-free values, in which self-play is off.
        options: further keyword arguments of :func:`trc.training.supervised_trainer.train_with_process_supervision`
            (e.g. ``TrainConfig`` fields such as ``patience`` or ``weight_decay``).
        seed: seeds the split, the model's initial weights and the training.
        data_seed: seeds the training start states; the test states use ``data_seed + TEST_SEED_OFFSET``.
        act, max_iterations, halt_tolerance: adaptive halting, as ``trc train --act`` (then
            ``max_iterations`` replaces ``iterations``).
        init: another experiment whose trained weights this one starts from (``--init_from``).
        heads_only: with ``act`` and ``init``, train only the halting (and value) heads of the
            planner ``init`` trained (``--heads_only``).
    """

    problem: str = "vanderpol"
    num_train: int = 1000
    num_test: int = 1000
    expert: str = "lqr"
    process_weight: float = _DEFAULTS["process_weight"]
    variant: str = _DEFAULTS["variant"]
    model_size: str = _DEFAULTS["model_size"]
    use_two_level: bool = _DEFAULTS["use_two_level"]
    H_cycles: int | None = _DEFAULTS["H_cycles"]
    L_cycles: int | None = _DEFAULTS["L_cycles"]
    iterations: int = _DEFAULTS["iterations"]
    epochs: int = _DEFAULTS["epochs"]
    batch_size: int = _DEFAULTS["batch_size"]
    lr: float = _DEFAULTS["lr"]
    val_fraction: float = _DEFAULTS["val_fraction"]
    use_value_predictor: bool = False
    value_weight: float = _DEFAULTS["value_weight"]
    recipe: tuple[tuple[str, Any], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    seed: int = 0
    data_seed: int = 0
    act: bool = False
    max_iterations: int = 8
    halt_tolerance: float | None = None
    init: "Experiment | None" = None
    heads_only: bool = False

    def __post_init__(self) -> None:
        from trc.models.config import PRESETS
        from trc.data.experts import EXPERTS
        from trc.training.process_supervision import DEFAULT_VARIANT, check_loss_settings
        from trc.problems import get_problem

        get_problem(self.problem)  # a name it does not know is one sentence, as everywhere

        object.__setattr__(self, "options", _pairs(self.options))
        object.__setattr__(self, "recipe", _pairs(self.recipe))
        from trc.training.recipe import RECIPE

        own = {"epochs", "loss_variant", "process_weight", "val_closed_loop"}  # fields of their own, or unused here
        unknown = sorted(set(dict(self.recipe)) - (set(RECIPE) - own))
        if unknown:
            raise TRCError(f"experiment: unknown recipe setting {unknown[0]!r}")
        preset = ("two_level_" if self.use_two_level else "") + str(self.model_size)
        try:
            for name in ("num_train", "num_test", "epochs", "batch_size", "iterations", "lr", "val_fraction"):
                check(name, getattr(self, name))
            for name in ("H_cycles", "L_cycles"):
                if getattr(self, name) is not None:  # None keeps the preset's
                    check(name, getattr(self, name))
            check_loss_settings(self.process_weight, self.variant, self.value_weight)
        except TRCError as e:
            raise TRCError(f"experiment: {e}") from None
        checks = [
            (self.expert in EXPERTS, f"unknown expert {self.expert!r}; known: {', '.join(sorted(EXPERTS))}"),
            (preset in PRESETS, f"unknown model preset {preset!r}; known: {', '.join(PRESETS)}"),
            (self.process_weight > 0 or self.variant == DEFAULT_VARIANT,
             f"loss variant {self.variant!r} has no effect with process_weight 0 (behavior cloning)"),
            (not self.heads_only or (self.act and self.init is not None),
             "heads_only trains the halting head of a trained planner: it needs act and init"),
        ]
        for ok, message in checks:
            if not ok:
                raise TRCError(f"experiment: {message}")

    @property
    def label(self) -> str:
        """``"BC"`` for behavior cloning, else ``"PS"``; ``"+SP"`` with self-play, ``"+value"`` with a value
        head, ``"+act"`` with a halting head."""
        return ("BC" if self.process_weight == 0 else "PS") + ("+SP" if dict(self.recipe).get("self_play") else "") \
            + ("+value" if self.use_value_predictor else "") + ("+act" if self.act else "")

    def replace(self, **changes: Any) -> "Experiment":
        """A copy with some settings changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, JSON-able (the options as a dict)."""
        d = dataclasses.asdict(self)
        d["options"] = dict(self.options)
        d["recipe"] = dict(self.recipe)
        return d

    def get_problem(self):
        """The control problem (``trc.get_problem(self.problem)``)."""
        from trc.problems import get_problem

        return get_problem(self.problem)

    # -- data --------------------------------------------------------------------------------

    def _dataset(self, cache_dir, role: str, expert: str, n: int, seed: int) -> dict[str, Any]:
        """Demonstrations of ``expert`` from ``n`` start states drawn with ``seed``, cached."""
        return cached_dataset(cache_dir, role, self.get_problem(), expert, n, seed)

    def train_data(self, cache_dir: str | Path | None = None) -> dict[str, Any]:
        """The ``num_train`` demonstrations (a ``trc.data.datasets`` dataset dict), cached in ``cache_dir``."""
        return self._dataset(cache_dir, "train", self.expert, self.num_train, self.data_seed)

    def test_data(self, cache_dir: str | Path | None = None) -> dict[str, Any]:
        """The expert's plans from the ``num_test`` held-out start states, cached in ``cache_dir``."""
        return self._dataset(cache_dir, "test", self.expert, self.num_test, self.data_seed + TEST_SEED_OFFSET)

    def optimal_data(self, cache_dir: str | Path | None = None) -> dict[str, Any]:
        """The optimum (``trc.data.experts.optimal_controls``) from the same test states, cached."""
        return self._dataset(cache_dir, "test", "optimal", self.num_test, self.data_seed + TEST_SEED_OFFSET)

    # -- training and evaluation -------------------------------------------------------------

    def cache_key(self) -> str:
        """16 hex digits naming the trained model: every setting and the code fingerprint."""
        return cache_key(self.to_dict(), "model")

    def model_path(self, cache_dir: str | Path) -> Path:
        """Where :meth:`run` keeps the trained model in ``cache_dir``."""
        return Path(cache_dir) / f"model-{self.problem}-{self.label}-{self.cache_key()}.pt"

    def load_cached(self, cache_dir: str | Path):
        """The trained model cached in ``cache_dir``, or None (see :func:`trc.book.cache.cached_model`)."""
        return cached_model(self.model_path(cache_dir), self.get_problem(), self.cache_key())

    def build_model(self):
        """The untrained model, as ``trc train`` builds it (seeded with ``seed``)."""
        from trc.training.train import build_model

        torch.manual_seed(self.seed)
        return build_model(self.get_problem(), self.model_size, self.use_two_level, self.H_cycles, self.L_cycles,
                           self.max_iterations if self.act else self.iterations, halting=self.act)

    def split(self, cache_dir: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The demonstrations split into training and validation data, as ``trc train`` splits them."""
        from trc.data.datasets import split_dataset

        return split_dataset(self.train_data(cache_dir), self.val_fraction, self.seed)

    def recipe_settings(self) -> dict[str, Any]:
        """The self-play and curriculum settings of this run (the recipe's problem-free values, then ``recipe``)."""
        from trc.training.recipe import RECIPE

        return {**RECIPE, **dict(self.recipe)}

    def training_data(self, train: dict):
        """The training batches: self-play data when the recipe turns it (or a curriculum) on, else the demonstrations."""
        from trc.data.datasets import make_loader
        from trc.training.recipe import build_training_data

        return build_training_data(self.get_problem(), train, self.batch_size, self.recipe_settings(), self.seed,
                                   self.epochs) or make_loader(train, self.batch_size, shuffle=True, seed=self.seed)

    def train(self, cache_dir: str | Path | None = None, progress: bool = False):
        """Train the model as ``trc train`` would (no cache lookup).

        Returns:
            The trained model (its best epoch; with the recipe's ``closed_loop_steps``, the last epoch
            tuned in closed loop, at its best validated step) with ``checkpoint_metadata``: the settings, the
            ``history`` and ``train_seconds``.
        """
        from trc.data.datasets import make_loader
        from trc.training.supervised_trainer import train_with_process_supervision
        from trc.models.value_predictor import create_value_predictor

        train, val = self.split(cache_dir)
        model = self.build_model()
        if self.init is not None:
            state = self.init.run(cache_dir).model.state_dict()
            model.load_state_dict({k: v for k, v in state.items() if not k.startswith("value_predictor.")},
                                  strict=False)
        if self.heads_only:
            from trc.training.deep_supervision import freeze_planner

            freeze_planner(model)
        value_predictor = create_value_predictor(model.config.latent_dim) if self.use_value_predictor else None
        settings = self.recipe_settings()
        steps = settings["closed_loop_steps"]
        start = time.perf_counter()
        model = train_with_process_supervision(
            model, self.training_data(train),
            make_loader(val, 256, shuffle=False), epochs=self.epochs, lr=self.lr,
            process_weight=self.process_weight, value_predictor=value_predictor, value_weight=self.value_weight,
            variant=self.variant, seed=self.seed, progress=progress, halt_tolerance=self.halt_tolerance,
            restore_best=not steps, **dict(self.options))
        if steps:  # as trc train --closed_loop_steps: the last epoch tuned on its closed-loop cost
            from trc.training.closed_loop_tuning import ClosedLoopTuning, tune_closed_loop

            history = model.training_history
            model, history["closed_loop_tuning"] = tune_closed_loop(
                model, torch.as_tensor(val["initial_states"], dtype=torch.float64),
                ClosedLoopTuning(steps=steps, replan_every=settings["closed_loop_replan"],
                                 truncate=settings["closed_loop_truncate"], critic=settings["closed_loop_critic"]),
                seed=self.seed, val_target=torch.as_tensor(val["target_states"], dtype=torch.float64))
            model.training_history = history
        model.checkpoint_metadata = {
            "experiment": self.to_dict(), "cache_key": self.cache_key(), "process_weight": self.process_weight,
            "variant": self.variant, "history": model.training_history,
            "train_seconds": time.perf_counter() - start}
        return model

    def run(self, cache_dir: str | Path | None = None, progress: bool = False) -> "ExperimentResult":
        """Train (or load the cached model) and evaluate it on the test states.

        Torch runs on one intra-op thread meanwhile: the operations are small, and
        spreading them over threads costs more than it saves.

        Args:
            cache_dir: folder of the cache (see the module docstring); None caches nothing.
            progress: show the trainer's progress bar.

        Returns:
            An :class:`ExperimentResult`.
        """
        from trc.models.checkpoint import save_checkpoint
        from trc.evaluation.refinement_evaluator import RefinementEvaluator
        from trc.evaluation.metrics import summarize
        from trc.data.experts import one_thread

        start = time.perf_counter()
        with one_thread():  # small operations: threads cost more than they save (2.2x the time on a busy 2-core CPU: README)
            test, optimal = self.test_data(cache_dir), self.optimal_data(cache_dir)
            path = None if cache_dir is None else self.model_path(cache_dir)
            model = None if path is None else self.load_cached(cache_dir)
            cached = model is not None
            if model is None:
                model = self.train(cache_dir, progress)
                if path is not None:
                    save_checkpoint(model, path, **model.checkpoint_metadata)
            optimal_costs = np.asarray(optimal["costs"], dtype=np.float64)
            metrics = RefinementEvaluator(model, label=self.label).evaluate(test, optimal_costs=optimal_costs)
        meta = model.checkpoint_metadata
        summary = {**summarize(metrics), "train_seconds": meta["train_seconds"]}
        return ExperimentResult(self, model, meta["history"], metrics, summary, test, optimal,
                                meta["train_seconds"], time.perf_counter() - start, cached)


def run_experiments(experiments: Sequence[Experiment], cache_dir: str | Path,
                    workers: int | None = None) -> list["ExperimentResult"]:
    """:meth:`Experiment.run` of each, the uncached trainings ``workers`` at a time in other processes.

    Each training runs on one thread, as in :meth:`Experiment.run`, and gives the same
    model as there (same seeds, same code); on a machine with ``workers`` idle cores,
    ``n`` trainings take about ``ceil(n / workers)`` times one.  Then every experiment
    is run here, from the cache (loading and evaluating).

    Args:
        experiments: the experiments, in the order of the results.
        cache_dir: the cache (required: it is how the trained models come back).
        workers: processes that train at once; 1 trains here, one after the other.  Default:
            2 in full mode, 1 in fast mode (``TRC_FAST=1``), where a training takes less
            time than starting a process.

    Returns:
        An :class:`ExperimentResult` per experiment; ``cached`` says whether its model was
        in the cache before this call.
    """
    from trc.book.fast import pick

    if cache_dir is None:
        raise TRCError("run_experiments needs a cache_dir: the trained models come back through it")
    workers = pick(2, 1) if workers is None else workers
    todo = list(dict.fromkeys(e for e in experiments if e.load_cached(cache_dir) is None))
    if workers > 1 and len(todo) > 1:
        for experiment in todo:  # made here once, before the workers read them
            experiment.train_data(cache_dir)
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_train_into_cache, todo, [str(cache_dir)] * len(todo),
                          [code_fingerprint("model")] * len(todo)))
    results = [experiment.run(cache_dir) for experiment in experiments]
    return [dataclasses.replace(r, cached=False) if r.experiment in todo else r for r in results]


def train_commands(commands: Sequence[Sequence[Any]], workers: int | None = None) -> list[tuple[str, float]]:
    """``trc train --quiet`` with each argument list, ``workers`` at a time in other processes.

    Each run is ``trc train`` in a process of its own on one thread (as a notebook's kernel
    runs it, ``torch.set_num_threads(1)``), so it trains the same model as there; give the
    longest runs first, since each process takes the next command as it finishes one.

    Args:
        commands: ``trc train``'s arguments for each run (converted with ``str``).
        workers: processes at once; 1 runs them here, one after the other.  Default: 2 in full
            mode, 1 in fast mode (``TRC_FAST=1``), where a run takes less time than starting a process.

    Returns:
        For each command, in order, what ``trc train`` printed and its wall time in seconds.

    Raises:
        TRCError: naming the first command that exited with a non-zero status.
    """
    from trc.book.fast import pick

    workers = pick(2, 1) if workers is None else workers
    commands = [[str(a) for a in c] for c in commands]
    if workers > 1 and len(commands) > 1:
        with ProcessPoolExecutor(min(workers, len(commands)), mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(_train_command, commands))
    return [_train_command(c) for c in commands]


def _train_command(args: list[str]) -> tuple[str, float]:
    """``trc train --quiet *args`` here, on one thread: what it printed and its wall time (a worker of
    :func:`train_commands`)."""
    import contextlib
    import io

    from trc.cli import main
    from trc.data.experts import one_thread

    printed, start = io.StringIO(), time.perf_counter()
    with one_thread(), contextlib.redirect_stdout(printed):
        status = main(["train", "--quiet", *args])
    if status != 0:
        raise TRCError(f"trc train {' '.join(args)} exited with status {status}")
    return printed.getvalue().strip(), time.perf_counter() - start


def _train_into_cache(experiment: Experiment, cache_dir: str, fingerprint: str) -> None:
    """Train ``experiment`` on one thread and keep the model in ``cache_dir`` (a worker of :func:`run_experiments`).

    ``fingerprint`` is the caller's :func:`~trc.book.cache.code_fingerprint` of ``"model"``.  A worker
    imports ``trc`` afresh; if the source was edited after the caller imported it, the worker would
    train other code under another key than the caller looks up, so it refuses instead.
    """
    from trc.data.experts import one_thread
    from trc.models.checkpoint import save_checkpoint

    if code_fingerprint("model") != fingerprint:
        raise TRCError(f"trc's source changed after this process imported it (code fingerprint {fingerprint}, "
                       f"now {code_fingerprint('model')}); restart it (the kernel) to train with the new code")
    with one_thread():
        model = experiment.train(cache_dir)
        save_checkpoint(model, experiment.model_path(cache_dir), **model.checkpoint_metadata)


@dataclass
class ExperimentResult:
    """What :meth:`Experiment.run` returns.

    Attributes:
        experiment: the settings.
        model: the trained model (as :meth:`Experiment.train` returns it, eval mode; ``model.value_predictor`` with a value head).
        history: the trainer's history (per-epoch ``train`` losses and ``val`` metrics).
        metrics: :class:`~trc.evaluation.metrics.RefinementMetrics` on the test states, every iterate,
            with ``optimal_costs``.
        summary: :func:`~trc.evaluation.metrics.summarize` of ``metrics`` and ``train_seconds``.
        test_data: the expert's plans from the test states (dataset dict).
        optimal_data: the optimum from the same states (dataset dict).
        train_seconds: wall time of the training (when it ran, also for a cached model).
        seconds: wall time of this run: loading or training, and evaluating.
        cached: whether the model came from the cache.
    """

    experiment: Experiment
    model: torch.nn.Module
    history: dict[str, Any]
    metrics: Any
    summary: dict[str, Any]
    test_data: dict[str, Any] = field(repr=False)
    optimal_data: dict[str, Any] = field(repr=False)
    train_seconds: float
    seconds: float
    cached: bool

    @property
    def optimal_costs(self) -> np.ndarray:
        """The optimal cost of every test state, ``[num_test]``."""
        return np.asarray(self.optimal_data["costs"], dtype=np.float64)


# The book trains many models; its full build must stay within half an hour on two cores.
BOOK_MAX_EPOCHS = 80


def book_experiment(**changes: Any) -> Experiment:
    """The Van der Pol experiment the book's chapters share, so that their cached runs coincide.

    Full mode: the benchmark's data (1000 demonstrations, 1000 test states) and the
    library's training defaults, with at most :data:`BOOK_MAX_EPOCHS` epochs.  Fast mode
    (``TRC_FAST=1``): 128 demonstrations, 64 test states, 2 epochs.  ``changes`` replace
    any setting (for example ``process_weight=0.0`` for the baseline).
    """
    from trc.book.fast import pick

    base = Experiment(num_train=pick(1000, 128), num_test=pick(1000, 64),
                      epochs=pick(min(Experiment().epochs, BOOK_MAX_EPOCHS), 2))
    return base.replace(**changes)


__all__ = ["BOOK_MAX_EPOCHS", "Experiment", "ExperimentResult", "book_experiment", "run_experiments", "train_commands"]
