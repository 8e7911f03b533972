"""A small, problem-agnostic training loop: AdamW, warmup + cosine, checkpoints, resume.

The trainer knows nothing about control.  It gets a module, a loss function
``loss_fn(module, batch) -> (loss, parts)`` and an optional validation
function ``val_fn(module) -> dict | None``, and returns a history::

    trainer = Trainer(TrainConfig(epochs=20, lr=1e-3, checkpoint_dir="out"))
    history = trainer.fit(model, loss_fn, train_loader, val_fn)

Every epoch it writes the last checkpoint, and the best one when the
monitored metric (a key of ``val_fn``'s dict, else the training loss)
improves.  Checkpoints are written by a ``save_fn`` callback (the caller
chooses the format) and carry the optimizer, schedule and history, so
``fit(..., resume=True)`` continues an interrupted run to the same result as
an uninterrupted one: the random state at the start of each epoch is derived
from ``(seed, epoch)`` and the data loader's generator is reseeded with it.
Resuming a finished run with more ``epochs`` extends it: the warmup + cosine
schedule is recomputed for the new total number of steps and continues from
the saved step (so the learning rate rises again to where the longer cosine
is at that step), and the history goes on from the saved one.
A non-finite loss, or (with ``grad_clip`` set) a non-finite gradient norm, stops
training before the bad step; the
checkpoints on disk stay as they were.  With the hook ``optimizer_key(batch)``
AdamW keeps one set of moment estimates per key (:class:`KeyedAdamW`): batches
of different kinds (one problem each, in multi-problem training) then take
steps scaled by their own gradients' history, not by the largest kind's.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from trc.errors import TRCError, check
from trc.io import atomic_write

Tensor = torch.Tensor
LossFn = Callable[[nn.Module, Any], tuple[Tensor, Mapping[str, Tensor]]]
ValFn = Callable[[nn.Module], Mapping[str, float] | None]
SaveFn = Callable[[nn.Module, Path, dict], None]
LoadFn = Callable[[Path], tuple[dict, dict]]

LAST, BEST = "last_model.pt", "best_model.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :class:`Trainer` (the batch size lives with the data loader).

    Attributes:
        epochs: passes over the training data.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW's decoupled weight decay.
        grad_clip: maximum gradient norm; None turns clipping off.
        warmup: fraction of all steps spent ramping the learning rate up linearly.
        min_lr_ratio: the cosine schedule ends at ``lr * min_lr_ratio``.
        patience: stop after this many epochs without a better monitored metric; None never stops.
        monitor: the validation metric that picks the best checkpoint (the training loss without ``val_fn``).
        mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
        seed: seeds every epoch's random state.
        device: where the module and batches live.
        checkpoint_dir: folder for ``last_model.pt`` and ``best_model.pt``; None writes nothing.
        progress: show a progress bar (tqdm.auto, so it renders in notebooks).
        restore_best: load the best weights into the module when training ends.
    """

    epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    warmup: float = 0.02
    min_lr_ratio: float = 0.01
    patience: int | None = None
    monitor: str = "loss"
    mode: str = "min"
    seed: int = 0
    device: str = "cpu"
    checkpoint_dir: str | None = None
    progress: bool = True
    restore_best: bool = True

    def __post_init__(self) -> None:
        check("epochs", self.epochs)
        check("lr", self.lr)
        checks = [
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}"),
            (0 <= self.warmup < 1, f"warmup must be a fraction in [0, 1), got {self.warmup}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (self.patience is None or self.patience >= 1, f"patience must be >= 1 or None, got {self.patience}"),
            (self.mode in ("min", "max"), f"mode must be 'min' or 'max', got {self.mode!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TRCError(message)


def torch_save(module: nn.Module, path: Path, state: dict) -> None:
    """Default ``save_fn``: ``{"model_state", "trainer_state"}`` written atomically with ``torch.save``."""
    atomic_write(path, lambda tmp: torch.save({"model_state": module.state_dict(), "trainer_state": state}, tmp))


def torch_load(path: Path) -> tuple[dict, dict]:
    """Default ``load_fn``: the ``(model state, trainer state)`` that :func:`torch_save` wrote."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return ckpt["model_state"], ckpt["trainer_state"]


def cosine_with_warmup(total_steps: int, warmup: float, min_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor at step ``s``: linear warmup, then cosine from 1 down to ``min_ratio``."""
    warm = max(1, round(warmup * total_steps)) if warmup > 0 else 0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch's random state, a pure function of ``(seed, epoch)``."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _reseed(seed: int, loader) -> None:
    """Seed torch and every generator the loader shuffles with (on it, its sampler, their samplers, and
    the loaders it combines, listed in its ``loaders``)."""
    torch.manual_seed(seed)
    todo, seen = [loader], set()
    while todo:
        owner = todo.pop()
        if owner is None or id(owner) in seen:
            continue
        seen.add(id(owner))
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)
        todo += [getattr(owner, name, None) for name in ("sampler", "batch_sampler")]
        todo += list(getattr(owner, "loaders", ()))


class KeyedAdamW(torch.optim.AdamW):
    """AdamW with one set of moment estimates (and step count) per key: ``use(key)`` before
    ``step()`` makes the step read and update that key's.  The parameters, learning rate and
    weight decay are shared.  Its state dict holds every key's state."""

    def __init__(self, params, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.states: dict = {}
        self.use(0)

    def use(self, key) -> None:
        self.key = key
        self.state = self.states.setdefault(key, defaultdict(dict))

    def state_dict(self) -> dict:
        key, packed = self.key, {}
        for k in list(self.states):
            self.use(k)
            packed[k] = super().state_dict()["state"]
        self.use(key)
        return {**super().state_dict(), "keyed_state": packed}

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        packed = state_dict.pop("keyed_state")
        self.states = {}
        for k, state in packed.items():
            super().load_state_dict({**state_dict, "state": state})
            self.states[k] = self.state
        self.use(self.key)


class Trainer:
    """Trains one module with AdamW (see the module docstring).

    Args:
        config: the settings.
        save_fn: ``save_fn(module, path, trainer_state)`` writes a checkpoint; default :func:`torch_save`.
        load_fn: ``load_fn(path) -> (model_state, trainer_state)`` reads one back; default :func:`torch_load`.
    """

    def __init__(self, config: TrainConfig, save_fn: SaveFn = torch_save, load_fn: LoadFn = torch_load):
        self.config = config
        self.save_fn = save_fn
        self.load_fn = load_fn

    def _better(self, value: float, best: float | None) -> bool:
        if not math.isfinite(value):
            return False
        return best is None or (value < best if self.config.mode == "min" else value > best)

    def fit(self, module: nn.Module, loss_fn: LossFn, train_loader, val_fn: ValFn | None = None,
            hooks: Mapping[str, Callable] | None = None, resume: bool = False) -> dict:
        """Train ``module`` in place and return the history.

        Args:
            module: the parameters to train (wrap several modules in an ``nn.ModuleDict``).
            loss_fn: ``loss_fn(module, batch) -> (scalar loss, {name: detached tensor})``.
            train_loader: an iterable of batches (tensors, or dicts/tuples of them); one pass per epoch.
            val_fn: ``val_fn(module) -> {metric: float}`` run after every epoch in eval mode without
                gradients, or None (the epoch is not validated).
            hooks: optional callbacks ``on_epoch_start(epoch)``, ``on_batch_end(step, loss, parts)`` and
                ``on_epoch_end(record)``; ``state_dict() -> dict`` with ``load_state_dict(dict)``,
                whose state (e.g. data the callbacks refresh) is checkpointed with the trainer's and
                restored on resume; and ``optimizer_key(batch) -> key``: AdamW's moments are kept per
                key (:class:`KeyedAdamW`).
            resume: continue from ``checkpoint_dir/last_model.pt`` if it exists.

        Returns:
            ``{"epochs": [record, ...], "best_epoch", "best_metric", "monitor", "stop_reason"}``; a record
            holds ``epoch``, ``lr``, ``seconds``, ``train`` (mean loss and parts) and ``val`` (metrics or
            None).  ``stop_reason`` is None when all epochs ran.
        """
        cfg, hooks = self.config, dict(hooks or {})
        device = torch.device(cfg.device)
        module.to(device)
        params = [p for p in module.parameters() if p.requires_grad]
        key_of = hooks.get("optimizer_key")
        optimizer = (torch.optim.AdamW if key_of is None else KeyedAdamW)(params, lr=cfg.lr,
                                                                          weight_decay=cfg.weight_decay)
        total_steps = cfg.epochs * len(train_loader)
        schedule = cosine_with_warmup(total_steps, cfg.warmup, cfg.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        folder = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
        history = {"epochs": [], "best_epoch": None, "best_metric": None, "monitor": cfg.monitor,
                   "stop_reason": None}
        best_state, bad_epochs, start = None, 0, 0

        if not resume and folder is not None and any((folder / name).exists() for name in (LAST, BEST)):
            raise TRCError(f"{str(folder)!r} already holds a run; pass resume=True to continue it, or another "
                           f"folder (nothing is overwritten)")
        if resume and folder is not None and (folder / LAST).exists():
            model_state, state = self.load_fn(folder / LAST)
            monitor = state["history"].get("monitor", cfg.monitor)
            if monitor != cfg.monitor:  # its best epoch would be judged on two scales
                raise TRCError(f"the run in {str(folder)!r} picked its best epoch by {monitor!r}, this training "
                               f"picks by {cfg.monitor!r}; continue it with the version of trc that started it, "
                               f"or train afresh in another folder")
            module.load_state_dict(model_state)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):  # this run's schedule, saved step
                group["lr"] = base * schedule(scheduler.last_epoch)
            history, bad_epochs, start = state["history"], state["bad_epochs"], state["epoch"] + 1
            if "load_state_dict" in hooks and "hooks" in state:
                hooks["load_state_dict"](state["hooks"])
            if (folder / BEST).exists():
                best_state = self.load_fn(folder / BEST)[0]
            if history["stop_reason"] is not None:  # it had stopped early: nothing left to do
                start = cfg.epochs

        step = start * len(train_loader)
        bar = tqdm(range(start, cfg.epochs), total=cfg.epochs, initial=start, disable=not cfg.progress,
                   desc="train", unit="epoch")
        for epoch in bar:
            _reseed(epoch_seed(cfg.seed, epoch), train_loader)
            if "on_epoch_start" in hooks:
                hooks["on_epoch_start"](epoch)
            module.train()
            tic, sums, batches = time.perf_counter(), {}, 0
            for batch in train_loader:
                optimizer.zero_grad(set_to_none=True)   # before: a loss_fn may backpropagate pieces itself
                loss, parts = loss_fn(module, _to(batch, device))
                if not torch.isfinite(loss):
                    history["stop_reason"] = f"non-finite loss at epoch {epoch}, step {step}"
                    break
                loss.backward()
                if cfg.grad_clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if not torch.isfinite(norm):
                        history["stop_reason"] = f"non-finite gradient at epoch {epoch}, step {step}"
                        break
                if key_of is not None:
                    optimizer.use(key_of(batch))
                optimizer.step()
                scheduler.step()
                step += 1
                batches += 1
                for name, value in {"loss": loss, **parts}.items():
                    value = torch.as_tensor(value).detach().to("cpu", torch.float64)
                    sums[name] = sums[name] + value if name in sums else value
                if "on_batch_end" in hooks:
                    hooks["on_batch_end"](step, loss.item(), parts)
            if history["stop_reason"] is not None:
                break
            if not batches:
                raise TRCError(f"the training data gave no batches in epoch {epoch}")

            train = {k: (v / batches).tolist() for k, v in sums.items()}
            val = None
            if val_fn is not None:
                module.eval()
                with torch.no_grad():
                    val = val_fn(module)
                val = None if val is None else {k: float(v) for k, v in val.items()}
            record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"],
                      "seconds": time.perf_counter() - tic, "train": train, "val": val}
            history["epochs"].append(record)

            metrics = val if val_fn is not None else train
            improved = False
            if metrics is not None:
                if cfg.monitor not in metrics:
                    raise TRCError(f"monitored metric {cfg.monitor!r} is not among {sorted(metrics)}")
                value = metrics[cfg.monitor]
                improved = self._better(value, history["best_metric"])
                if improved:
                    history["best_epoch"], history["best_metric"], bad_epochs = epoch, value, 0
                    best_state = copy.deepcopy(module.state_dict())
                else:
                    bad_epochs += 1
            if cfg.patience is not None and bad_epochs >= cfg.patience:
                history["stop_reason"] = f"no better {cfg.monitor} for {cfg.patience} epochs"
            if folder is not None:
                state = self._state(epoch, optimizer, scheduler, history, bad_epochs, hooks)
                if improved:  # the best first, then the same bytes as the last
                    self.save_fn(module, folder / BEST, state)
                    atomic_write(folder / LAST, lambda tmp: shutil.copyfile(folder / BEST, tmp))
                else:
                    self.save_fn(module, folder / LAST, state)
            bar.set_postfix({"loss": train["loss"],
                             **({cfg.monitor: metrics[cfg.monitor]} if metrics is not None else {})})
            if "on_epoch_end" in hooks:
                hooks["on_epoch_end"](record)
            if history["stop_reason"] is not None:
                break
        bar.close()
        if cfg.restore_best and best_state is not None:
            module.load_state_dict(best_state)
        return history

    @staticmethod
    def _state(epoch: int, optimizer, scheduler, history: dict, bad_epochs: int, hooks: Mapping) -> dict:
        state = {"epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "history": copy.deepcopy(history), "bad_epochs": bad_epochs}
        if "state_dict" in hooks:
            state["hooks"] = hooks["state_dict"]()
        return state
