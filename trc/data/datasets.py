"""Datasets of expert demonstrations: generate, save, load (validated), batch (``trc generate`` is :mod:`trc.data.generate`).

A dataset is a dict of arrays over ``N`` samples, stored as ``.npz``:

=======================  ====================  =====================================
key                      shape                 meaning
=======================  ====================  =====================================
``initial_states``       ``[N, n_x]``          start states ``x0``
``target_states``        ``[N, n_x]``          targets
``state_trajectories``   ``[N, T+1, n_x]``     the expert's trajectory, ``X[:, 0] = x0``
``control_sequences``    ``[N, T, n_u]``       the expert's open-loop controls
``costs``                ``[N]``               the problem's cost of each demonstration
``metadata``             0-d string            JSON: problem parameters, expert, seed, ...
=======================  ====================  =====================================

Arrays are float32; trajectories and costs are those of the stored (float32)
controls, simulated in float64.  Nothing is pickled: files are read with
``allow_pickle=False`` and checked before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from trc.errors import TRCError, check
from trc.data.experts import EXPERTS
from trc.io import atomic_write, check_seed
from trc.problems import ControlProblem, get_problem

REQUIRED = ("initial_states", "target_states", "state_trajectories", "control_sequences", "costs")
LOADER_KEYS = ("initial_states", "target_states", "control_sequences", "costs")
MAX_DATASET_BYTES = 4 * 2**30  # the arrays generate_dataset may make: 4 GiB (3.5 million Van der Pol samples)


def dataset_bytes(problem: ControlProblem, num_samples: int) -> int:
    """The size of the float32 arrays of ``num_samples`` demonstrations of ``problem`` (as saved)."""
    n_x, n_u, T = problem.n_x, problem.n_u, problem.horizon
    return 4 * num_samples * (2 * n_x + (T + 1) * n_x + T * n_u + 1)


def generate_dataset(problem: ControlProblem | str, num_samples: int, expert: str = "lqr", seed: int = 0,
                     *, chunk_size: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Demonstrations of ``expert`` from start states drawn uniformly from the problem's box.

    Args:
        problem: the control problem (its default target is used), or a name for ``get_problem``.
        num_samples: ``N > 0``, at most what fits in :data:`MAX_DATASET_BYTES` (:func:`dataset_bytes`).
        expert: a name in :data:`trc.data.experts.EXPERTS`.
        seed: seeds the start states, an integer in ``[0, 2**63 - 1]``; the experts are deterministic.
        chunk_size: samples per expert call (default: 100000 for LQR, 1000 otherwise).
        progress: show a progress bar (on a terminal).

    Returns:
        The dataset dict (see the module docstring) with a ``metadata`` dict.
    """
    if isinstance(problem, str):
        problem = get_problem(problem)
    num_samples = check("num_samples", num_samples)
    size = dataset_bytes(problem, num_samples)
    if size > MAX_DATASET_BYTES:
        most = MAX_DATASET_BYTES // dataset_bytes(problem, 1)
        if most == 0:
            raise TRCError(f"one sample of {problem.name!r} with horizon {problem.horizon} takes more than the "
                           f"{MAX_DATASET_BYTES / 2**30:g} GiB a dataset may hold; choose a shorter horizon")
        raise TRCError(f"{num_samples} samples of {problem.name!r} would take {size / 2**30:.1f} GiB, more than "
                       f"the {MAX_DATASET_BYTES / 2**30:g} GiB a dataset may hold; generate at most {most} "
                       f"at a time (with different seeds)")
    seed = check_seed(seed)
    if expert not in EXPERTS:
        raise TRCError(f"unknown expert {expert!r}; known experts: {', '.join(sorted(EXPERTS))}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise TRCError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    chunk = chunk_size or (100_000 if expert == "lqr" else 1000)
    gen = torch.Generator().manual_seed(seed)
    x0 = problem.sample_initial_states(num_samples, gen, dtype=torch.float32).double()
    target = problem.target_like(x0).contiguous()
    parts = []
    with tqdm(total=num_samples, unit="sample", desc=f"{expert} expert", disable=None if progress else True) as bar:
        for i in range(0, num_samples, chunk):
            parts.append(EXPERTS[expert](problem, x0[i:i + chunk], target[i:i + chunk]).float())
            bar.update(parts[-1].shape[0])
    U = torch.cat(parts)                                                 # (N, T, n_u) float32
    if not torch.isfinite(U).all():
        raise TRCError(f"the {expert} expert's controls for {problem.name!r} (dt = {problem.dt:g}, horizon "
                       f"{problem.horizon}) are not finite: its model of the dynamics diverges; try a smaller dt")
    ev = problem.evaluate(x0, U.double(), target)
    metadata = {
        "problem": problem.to_dict(), "expert": expert, "seed": seed, "num_samples": num_samples,
        "mean_cost": float(ev["cost"].mean()), "success_rate": float(ev["success"].double().mean()),
    }
    return {
        "initial_states": x0.float().numpy(),
        "target_states": target.float().numpy(),
        "state_trajectories": ev["X"].float().numpy(),
        "control_sequences": U.numpy(),
        "costs": ev["cost"].float().numpy(),
        "metadata": metadata,
    }


def save_dataset(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Check ``data`` and write it to ``path`` atomically (metadata as a JSON string, no pickle)."""
    check_dataset(data, "the dataset to save")
    arrays = {k: np.asarray(data[k]) for k in REQUIRED}
    arrays["metadata"] = np.array(json.dumps(data.get("metadata", {})))

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to other names
            np.savez(f, **arrays)

    try:
        return atomic_write(path, write)
    except OSError as e:
        raise TRCError(f"cannot write dataset {str(path)!r}: {e.strerror or e}") from None


def load_dataset(path: str | os.PathLike, problem: ControlProblem | None = None) -> dict[str, Any]:
    """Read and validate a dataset; with ``problem``, also check that it fits that problem.

    Returns:
        The arrays of :data:`REQUIRED` and a ``metadata`` dict (empty if the file has none).

    Raises:
        TRCError: one sentence naming the file and the fault.
    """
    name = f"dataset {str(path)!r}"
    if not Path(path).is_file():
        raise TRCError(f"{name} does not exist" if not Path(path).exists() else f"{name} is not a file")
    try:
        npz = np.load(path, allow_pickle=False)
    except EOFError:
        raise TRCError(f"{name} is empty") from None
    except zipfile.BadZipFile:
        raise TRCError(f"{name} is truncated or corrupt (not a complete .npz archive)") from None
    except (ValueError, OSError):
        raise TRCError(f"{name} is not an .npz archive") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise TRCError(f"{name} holds a single .npy array, not an .npz archive of named arrays")
    data: dict[str, Any] = {}
    with npz:
        for key in (*REQUIRED, "metadata"):
            if key not in npz.files:
                continue
            try:
                data[key] = npz[key]
            except ValueError:
                raise TRCError(f"{name} stores '{key}' as pickled objects, which trc does not load") from None
            except (zipfile.BadZipFile, OSError, EOFError):
                raise TRCError(f"{name} is corrupt: '{key}' cannot be read") from None
    data["metadata"] = _parse_metadata(data.get("metadata"), name)
    check_dataset(data, name, problem)
    return data


def _parse_metadata(meta: np.ndarray | None, name: str) -> dict[str, Any]:
    if meta is None:
        return {}
    if meta.ndim != 0 or meta.dtype.kind != "U":
        raise TRCError(f"{name} has 'metadata' of dtype {meta.dtype} and shape {list(meta.shape)}, "
                       f"expected a single JSON string")
    try:
        out = json.loads(str(meta[()]))
    except json.JSONDecodeError:
        raise TRCError(f"{name} has 'metadata' that is not valid JSON") from None
    if not isinstance(out, dict):
        raise TRCError(f"{name} has 'metadata' that is not a JSON object")
    return out


def check_dataset(data: dict[str, Any], name: str, problem: ControlProblem | None = None) -> None:
    """Raise :class:`TRCError` unless ``data`` has the required, consistent, finite arrays.

    Args:
        data: the dataset dict.
        name: how messages name it, e.g. ``"dataset 'x.npz'"``.
        problem: if given, shapes must match its ``n_x``, ``n_u`` and horizon, and the
            metadata (if any) must name the same problem parameters.
    """
    for key in REQUIRED:
        if key not in data:
            raise TRCError(f"{name} lacks the array '{key}' (needs {', '.join(REQUIRED)})")
    arrays = {k: np.asarray(data[k]) for k in REQUIRED}
    ndims = {"initial_states": (2, "[N, n_x]"), "target_states": (2, "[N, n_x]"),
             "state_trajectories": (3, "[N, T+1, n_x]"), "control_sequences": (3, "[N, T, n_u]"),
             "costs": (1, "[N]")}
    for key, a in arrays.items():
        if a.dtype.kind not in "fiu":
            raise TRCError(f"{name} has '{key}' of dtype {a.dtype}, expected real numbers")
        if a.ndim != ndims[key][0]:
            raise TRCError(f"{name} has '{key}' of shape {list(a.shape)}, expected {ndims[key][1]}")
    x0, X, U = arrays["initial_states"], arrays["state_trajectories"], arrays["control_sequences"]
    N, n_x, T, n_u = x0.shape[0], x0.shape[1], U.shape[1], U.shape[2]
    if N == 0:
        raise TRCError(f"{name} holds no samples")
    expected = {"initial_states": [N, n_x], "target_states": [N, n_x], "state_trajectories": [N, T + 1, n_x],
                "control_sequences": [N, T, n_u], "costs": [N]}
    for key, shape in expected.items():
        if list(arrays[key].shape) != shape:
            raise TRCError(f"{name} has '{key}' of shape {list(arrays[key].shape)}, but the other arrays "
                           f"imply {shape} (N={N}, T={T}, n_x={n_x}, n_u={n_u})")
    for key, a in arrays.items():
        if not np.isfinite(a).all():
            raise TRCError(f"{name} has NaN or infinite values in '{key}'")
    if not np.allclose(X[:, 0], x0, rtol=1e-5, atol=1e-5):
        raise TRCError(f"{name} has state trajectories that do not start at its initial states")
    if problem is not None:
        _check_fits(name, problem, n_x, n_u, T, data.get("metadata") or {})


def _check_fits(name: str, problem: ControlProblem, n_x: int, n_u: int, T: int, meta: dict) -> None:
    for what, have, want in (("n_x", n_x, problem.n_x), ("n_u", n_u, problem.n_u),
                             ("horizon", T, problem.horizon)):
        if have != want:
            raise TRCError(f"{name} has {what}={have} but problem {problem.name!r} has {what}={want}")
    stored = meta.get("problem")
    if isinstance(stored, dict):
        ours = json.loads(json.dumps(problem.to_dict()))
        for key in sorted(set(ours) | set(stored)):
            if ours.get(key) != stored.get(key):
                raise TRCError(f"{name} was generated for {stored.get('name')!r} with {key}={stored.get(key)}, "
                               f"not for {problem.name!r} with {key}={ours.get(key)}")


def dataset_digest(data: dict[str, Any]) -> str:
    """SHA-256 (hex) of a dataset's :data:`REQUIRED` arrays, their dtypes and shapes: its identity.

    The same arrays give the same digest whatever the file is called or when it was written.
    """
    h = hashlib.sha256()
    for key in REQUIRED:
        a = np.ascontiguousarray(data[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_in_start_box(data: dict[str, Any], name: str, problem: ControlProblem) -> None:
    """Refuse start states outside ``problem``'s start box (the states the model is trained to plan from),
    and expert controls beyond its bound.

    Far outside it the simulation of a plan can diverge, and one diverging sample makes the
    training loss non-finite.  A relative tolerance of ``1e-6`` of the box width absorbs rounding.
    """
    x0 = np.asarray(data["initial_states"], dtype=np.float64)
    low, high = np.asarray(problem.x0_low, dtype=np.float64), np.asarray(problem.x0_high, dtype=np.float64)
    slack = 1e-6 * np.maximum(high - low, 1.0)
    outside = np.flatnonzero(((x0 < low - slack) | (x0 > high + slack)).any(axis=1))
    U = np.abs(np.asarray(data["control_sequences"], dtype=np.float64))
    beyond = np.flatnonzero((U > problem.u_max * (1 + 1e-5)).reshape(len(U), -1).any(axis=1))
    if beyond.size:
        raise TRCError(f"{name} has {beyond.size} demonstration(s) whose controls exceed the bound |u| <= "
                       f"{problem.u_max:g} of problem {problem.name!r} (first: sample {int(beyond[0])}, "
                       f"|u| up to {U[int(beyond[0])].max():.4g})")
    if outside.size:
        i = int(outside[0])
        raise TRCError(f"{name} has {outside.size} start state(s) outside the start box of problem {problem.name!r}, "
                       f"{problem.start_box} (first: sample {i}, {np.array2string(x0[i], precision=4)}); train on the box "
                       f"the problem defines, or widen it (x0_low, x0_high)")


def dataset_problem(data: dict[str, Any]) -> ControlProblem:
    """The problem a dataset was generated for, rebuilt from its metadata: the parameters ``trc generate``
    records, or a name alone (a dataset made elsewhere), which means the problem's defaults."""
    stored = (data.get("metadata") or {}).get("problem")
    if isinstance(stored, str):
        stored = {"name": stored}
    if not isinstance(stored, dict) or "name" not in stored:
        raise TRCError("the dataset's metadata does not name its problem; pass the problem explicitly")
    try:
        return get_problem(**stored)
    except (TypeError, ValueError) as e:  # TRCError included: a bad value, a wrong type, an unknown key
        raise TRCError(f"the dataset's metadata describes no valid problem: {e}") from None


def load_training_data(path: str | Path, problem: str | None = None, note: str = ""
                       ) -> tuple[dict[str, Any], ControlProblem]:
    """``(data, problem)`` of a dataset to train on, checked as ``trc train`` checks it at the door.

    The problem is the one the metadata names (``problem``, if given, must be the same), else ``problem``;
    the arrays must be finite and fit it, and the start states lie in its start box.  ``note`` ends the
    error for a problem other than the metadata's.
    """
    data = load_dataset(path)
    if "problem" in data["metadata"]:
        made_for = dataset_problem(data)
        if problem is not None and problem != made_for.name:
            raise TRCError(f"dataset {str(path)!r} was made for problem {made_for.name!r}, not {problem!r}{note}")
        problem = made_for
    elif problem is None:
        raise TRCError(f"dataset {str(path)!r} does not name its problem; pass --problem")
    else:
        problem = get_problem(problem)
    check_dataset(data, f"dataset {str(path)!r}", problem)
    check_in_start_box(data, f"dataset {str(path)!r}", problem)
    return data, problem


def split_dataset(data: dict[str, Any], val_fraction: float, seed: int = 0) -> tuple[dict, dict]:
    """A seeded random split of a dataset's arrays into ``(train, validation)`` (as ``trc train`` splits).

    Args:
        data: a dataset (its :data:`REQUIRED` arrays are split; the metadata is dropped).
        val_fraction: share held out for validation, at least one sample.
        seed: seeds the permutation.

    Returns:
        Two dicts of the :data:`REQUIRED` arrays, disjoint, together every sample.
    """
    check("val_fraction", val_fraction)
    seed = check_seed(seed)
    n = len(data["initial_states"])
    n_val = max(1, round(val_fraction * n))
    if n - n_val < 1:
        raise TRCError(f"the dataset has {n} samples: too few to hold out {val_fraction:.0%} for validation")
    order = np.random.default_rng(seed).permutation(n)
    return ({k: data[k][order[n_val:]] for k in REQUIRED}, {k: data[k][order[:n_val]] for k in REQUIRED})


BATCH_TUPLES = {1: ("initial_states",), 2: ("initial_states", "control_sequences"),
                3: ("initial_states", "target_states", "control_sequences")}


def as_batch(batch: Any, problem: ControlProblem | None = None) -> dict[str, Any]:
    """One batch of a loader as the dict that the trainers and the evaluator read.

    Accepts what a loader may yield: the dict of :func:`make_loader` (returned as is), a tuple
    or list ``(x0, U)`` (``DataLoader(TensorDataset(x0, U))``), ``(x0, target, U)`` or
    ``(x0,)``, or a bare tensor of start states.  Shapes: ``x0 [b, n_x]``, ``target [b, n_x]``,
    ``U [b, T, n_u]``.

    Args:
        batch: the batch.
        problem: with it, a missing ``target_states`` is filled with the problem's target.

    Returns:
        A dict with ``initial_states``, ``target_states`` (if given or ``problem`` is),
        and ``control_sequences`` and ``costs`` when the batch has them.
    """
    if isinstance(batch, dict):
        out = batch
    elif isinstance(batch, (tuple, list)) and len(batch) in BATCH_TUPLES:
        out = dict(zip(BATCH_TUPLES[len(batch)], batch))
    elif torch.is_tensor(batch):
        out = {"initial_states": batch}
    else:
        what = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise TRCError(f"a batch must be a dict, a tensor of start states, (x0, U) or (x0, target, U); got {what}")
    if "initial_states" not in out:
        raise TRCError(f"a batch needs 'initial_states'; this one has {', '.join(sorted(out)) or 'nothing'}")
    if problem is None:
        return out
    x0 = out["initial_states"]
    b = x0.shape[0] if len(x0.shape) == 2 else "b"
    wanted = {"initial_states": [b, problem.n_x], "target_states": [b, problem.n_x],
              "control_sequences": [b, problem.horizon, problem.n_u]}
    for key, shape in wanted.items():   # one sentence here, not a shape error deep inside a matmul
        if key in out and list(out[key].shape) != shape:
            raise TRCError(f"a batch's {key} must be {shape} for problem {problem.name!r}, "
                           f"got {list(out[key].shape)}".replace("'b'", "b"))
    if "target_states" not in out:
        out = {**out, "target_states": problem.target_like(x0)}
    return out


class _Arrays(torch.utils.data.Dataset):
    """Float32 tensors indexed by a list of sample indices at once (one batch per lookup)."""

    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0]

    def __getitem__(self, idx) -> dict[str, torch.Tensor]:
        return {k: v[idx] for k, v in self.tensors.items()}


def make_loader(data: dict[str, Any], batch_size: int = 64, shuffle: bool = True, seed: int = 0,
                drop_last: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader of dict batches: float32 ``initial_states [b, n_x]``, ``target_states [b, n_x]``,
    ``control_sequences [b, T, n_u]`` and ``costs [b]``.

    Shuffling draws from a generator seeded with ``seed``: the same seed gives the same
    sequence of epochs.
    """
    check("batch_size", batch_size)
    seed = check_seed(seed)
    missing = [k for k in LOADER_KEYS if k not in data]
    if missing:
        raise TRCError(f"the dataset lacks the array '{missing[0]}' (a loader needs {', '.join(LOADER_KEYS)})")
    ds = _Arrays({k: torch.as_tensor(np.asarray(data[k]), dtype=torch.float32) for k in LOADER_KEYS})
    sizes = {k: v.shape[0] if v.ndim else 0 for k, v in ds.tensors.items()}
    if len(set(sizes.values())) != 1 or not sizes["costs"]:
        raise TRCError(f"the dataset's arrays must hold the same positive number of samples, got {sizes}")
    sampler = (torch.utils.data.RandomSampler(ds, generator=torch.Generator().manual_seed(seed)) if shuffle
               else torch.utils.data.SequentialSampler(ds))
    batches = torch.utils.data.BatchSampler(sampler, batch_size, drop_last)
    return torch.utils.data.DataLoader(ds, sampler=batches, batch_size=None)
