"""One checkpoint format for trained models, loaded without executing anything.

A checkpoint is a ``torch.save`` of a plain dict (tensors, numbers, strings,
lists, dicts only, so ``torch.load(..., weights_only=True)`` reads it)::

    {"format": "trc-checkpoint", "version": 1,
     "state_dict": {...},                 # the model's tensors
     "config": {...},                     # TRCConfig.to_dict()
     "problem": {...},                    # problem.to_dict(); get_problem(**it) rebuilds it
     "problems": [{...}, ...],            # instead of "problem": a multi-problem model's problems
     "metadata": {...},                   # JSON-able training facts (epoch, losses, seed, ...)
     "trainer_state": {...},              # optional: optimizer state etc. for resuming
     "value_predictor": {"config": {...}, "state_dict": {...}}}   # optional

Every way a file can be wrong is one :class:`~trc.errors.TRCError` sentence
naming the file.
"""

from __future__ import annotations

import io
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from trc.models.config import TRCConfig
from trc.errors import TRCError
from trc.io import atomic_write, check_device
from trc.problems import ControlProblem, get_problem
from trc.models.value_predictor import ValuePredictor

FORMAT, VERSION = "trc-checkpoint", 1


def _cpu_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's own tensors on the CPU (a value head attached as a submodule is stored apart)."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if not k.startswith("value_predictor.")}


def save_checkpoint(model, path: str | os.PathLike, value_predictor: ValuePredictor | None = None,
                    trainer_state: dict | None = None, **metadata: Any) -> Path:
    """Write ``model`` (and a value head) to ``path`` atomically.

    Args:
        model: a :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl`.
        path: the file to write; parent folders are created.
        value_predictor: a :class:`~trc.models.value_predictor.ValuePredictor` to store with it; defaults to
            ``model.value_predictor`` (a submodule or a plain attribute).
        trainer_state: what a trainer needs to resume (optimizer state, epoch, history):
            tensors, numbers, strings, lists and dicts; read back with :func:`read_checkpoint`.
        **metadata: JSON-able training facts, returned as ``model.checkpoint_metadata`` on load.

    Returns:
        The path written.
    """
    try:
        metadata = json.loads(json.dumps(metadata))
    except (TypeError, ValueError) as e:
        raise TRCError(f"checkpoint metadata for {str(path)!r} must be JSON-able: {e}") from None
    if value_predictor is None:
        value_predictor = getattr(model, "value_predictor", None)
    payload = {"format": FORMAT, "version": VERSION, "state_dict": _cpu_state(model),
               "config": model.config.to_dict(), "metadata": metadata}
    if hasattr(model, "planners"):  # a MultiProblemTRC
        payload["problems"] = [p.to_dict() for p in model.problems]
    else:
        payload["problem"] = model.problem.to_dict()
    if value_predictor is not None:
        if value_predictor.config["latent_dim"] != model.config.latent_dim:
            raise TRCError(f"value predictor reads latents of width {value_predictor.config['latent_dim']} "
                           f"but the model's are {model.config.latent_dim}")
        payload["value_predictor"] = {"config": dict(value_predictor.config),
                                      "state_dict": _cpu_state(value_predictor)}
    if trainer_state is not None:
        payload["trainer_state"] = trainer_state
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if not _plain(payload):  # never write a file that load_checkpoint would refuse
        try:
            torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
        except Exception:  # noqa: BLE001 - any refusal is one sentence
            raise TRCError(f"checkpoint {str(path)!r} would hold Python objects that weights_only loading "
                           f"refuses; trainer_state may hold only tensors, numbers, strings, lists and dicts") from None
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


_PLAIN = (str, int, float, bool, type(None), torch.Tensor, torch.nn.Parameter)


def _plain(value: Any) -> bool:
    """Whether ``value`` holds nothing but dicts (of string or integer keys), lists, tuples, strings, numbers,
    None and tensors, which weights_only loading reads back.  A check of the types, a fraction of the time of
    loading the written bytes (which a trainer's checkpoint of every epoch would spend); anything else is
    loaded to see."""
    kind = type(value)
    if kind is dict:
        return all(type(k) in (str, int) and _plain(v) for k, v in value.items())
    if kind in (list, tuple):
        return all(_plain(v) for v in value)
    return kind in _PLAIN


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict[str, Any]:
    """The raw checkpoint dict in ``path`` (see the module docstring), checked for format and version.

    For trainers that resume: ``read_checkpoint(path)["trainer_state"]``.
    """
    path = Path(path)
    if not path.exists():
        raise TRCError(f"checkpoint {str(path)!r} does not exist")
    if not path.is_file():
        raise TRCError(f"checkpoint {str(path)!r} is not a file")
    if isinstance(map_location, (str, torch.device)):
        try:
            check_device(map_location)
        except TRCError as e:
            raise TRCError(f"cannot load checkpoint {str(path)!r} onto map_location {str(map_location)!r}: {e}") \
                from None
    try:
        with warnings.catch_warnings():  # a refused file ends in one TRCError, not warnings too
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load raises many types for bad bytes
        with open(path, "rb") as f:
            pickled = f.read(1) == b"\x80"  # the PROTO opcode that starts every pickle of protocol >= 2
        raise TRCError(f"checkpoint {str(path)!r} {_load_failure(str(e), pickled)}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        what = "a bare state dict or another format" if isinstance(ckpt, dict) else type(ckpt).__name__
        raise TRCError(f"{str(path)!r} is not a trc checkpoint (found {what}, "
                       f"expected a dict with format {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise TRCError(f"checkpoint {str(path)!r} has format version {ckpt.get('version')!r}; "
                       f"this trc reads version {VERSION}")
    for key in ("state_dict", "config", "problem", "metadata"):
        if key == "problem" and isinstance(ckpt.get("problems"), list):  # a multi-problem model
            continue
        if not isinstance(ckpt.get(key), dict):
            raise TRCError(f"checkpoint {str(path)!r} lacks its {key!r} entry")
    return ckpt


def _load_failure(message: str, pickled: bool) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused a file, from its message, as a predicate."""
    blocked = re.search(r"unsupported GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", message)
    if blocked:
        return (f"holds pickled Python objects ({blocked.group(1) or blocked.group(2)}) that weights_only "
                f"loading refuses; nothing in it was run (write checkpoints with trc.save_checkpoint)")
    operand = re.search(r"Unsupported operand (\d+)", message)
    if "Weights only load failed" in message and operand and pickled:
        return (f"is a plain pickle, not a torch checkpoint, with an instruction (opcode {operand.group(1)}) "
                f"that weights_only loading refuses; nothing in it was run")
    if "Weights only load failed" in message and not operand:
        first = next((line.strip() for line in message.splitlines()[1:] if line.strip()
                      and "weights_only" not in line and "PyTorch 2.6" not in line), "")
        return f"holds something weights_only loading refuses ({first[:120]}); nothing in it was run"
    if "CUDA" in message or "cuda" in message:
        return f"has tensors for a device this machine lacks ({message.splitlines()[0][:120]}); pass map_location='cpu'"
    return "is not a readable torch file (truncated, corrupted, or not a checkpoint)"


def load_checkpoint(path: str | os.PathLike, map_location="cpu", problem: ControlProblem | str | None = None):
    """The model stored in ``path``, in eval mode, with ``model.problem`` rebuilt.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: device for the tensors (as in ``torch.load``); the model is moved there.
        problem: the problem (object or name) the caller expects; a checkpoint trained on
            another problem, or the same one with other parameters, is an error.

    Returns:
        A :class:`~trc.models.tiny_recursive_control.TinyRecursiveControl` (a
        :class:`~trc.models.multi_problem.MultiProblemTRC` for a checkpoint of several problems,
        of which ``problem`` must then be one) with ``checkpoint_metadata`` (dict) and,
        if one was saved, ``value_predictor`` (a :class:`~trc.models.value_predictor.ValuePredictor` in eval mode,
        a plain attribute, not a submodule).
    """
    from trc.models.tiny_recursive_control import TinyRecursiveControl

    path = Path(path)
    ckpt = read_checkpoint(path, map_location)
    try:
        if "problems" in ckpt:
            from trc.models.multi_problem import MultiProblemTRC

            problems = [get_problem(**p) for p in ckpt["problems"]]
            if problem is not None:
                expected = get_problem(problem) if isinstance(problem, str) else problem
                if expected.to_dict() not in [p.to_dict() for p in problems]:
                    raise TRCError(f"was trained on problems {', '.join(p.name for p in problems)}, none of them "
                                   f"the expected {expected.name!r} with its parameters")
            # saved before planners had hidden biases: told their problem by the embedding alone
            config = TRCConfig.from_dict({"problem_conditioning": "embedding", **ckpt["config"]})
            model = MultiProblemTRC(config, problems)
        else:
            stored = get_problem(**ckpt["problem"])
            if problem is not None:
                expected = get_problem(problem) if isinstance(problem, str) else problem
                if expected.to_dict() != stored.to_dict():
                    diff = sorted(k for k, v in expected.to_dict().items() if stored.to_dict().get(k) != v)
                    raise TRCError(f"was trained on problem {stored.name!r}, not on the expected "
                                   f"{expected.name!r} (they differ in {', '.join(diff)})")
            model = TinyRecursiveControl(TRCConfig.from_dict(ckpt["config"]), stored)
        _load_state(model, ckpt["state_dict"], "model")
        value_predictor = None
        if "value_predictor" in ckpt:
            vp = ckpt["value_predictor"]
            value_predictor = ValuePredictor(**vp["config"])
            _load_state(value_predictor, vp["state_dict"], "value predictor")
    except TRCError as e:
        raise TRCError(f"checkpoint {str(path)!r}: {e}") from None
    except (TypeError, KeyError) as e:
        raise TRCError(f"checkpoint {str(path)!r} has a malformed entry ({e})") from None
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
        if value_predictor is not None:
            value_predictor.to(map_location)
    model.eval()
    model.checkpoint_metadata = ckpt["metadata"]
    if value_predictor is not None:
        object.__setattr__(model, "value_predictor", value_predictor.eval())  # not a submodule
    return model


def _load_state(module: torch.nn.Module, state: dict, what: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise TRCError(f"its {what} weights do not fit its stored config, so it belongs to another "
                       f"architecture ({first})") from None
    for name, tensor in module.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TRCError(f"its {what} weight {name!r} holds NaN or infinity; the file is damaged or was "
                           f"written by a diverged run")
