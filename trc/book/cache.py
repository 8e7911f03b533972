"""The book's cache: files named after exactly what made them, the code included.

:class:`~trc.book.experiment.Experiment` keeps four kinds of file in its ``cache_dir``, each
written atomically and named after a hash of exactly what produced it:

==================================  ===========================================
file                                what
==================================  ===========================================
``train-<problem>-<expert>-…npz``   the demonstrations (``trc.data.datasets`` format)
``test-<problem>-<expert>-…npz``    the expert's plans from the test states
``test-<problem>-optimal-…npz``     the optimum from the same test states
``model-<problem>-<label>-…pt``     the trained model and its history
==================================  ===========================================

A later run with the same settings loads them (``trc.data.datasets.load_dataset``,
``trc.models.checkpoint.load_checkpoint``: nothing is unpickled) and only evaluates,
which takes seconds; a changed setting misses.  Each hash also covers a
*fingerprint of the code* that made the file (:func:`code_fingerprint`): the
source of every ``trc`` module that can change it, and the torch version.  Edit
the losses, the trainer or a default, and every cached model is trained again;
edit the experts or a problem, and the data are made again too.  No version
number has to be remembered, and no cached result outlives the code that made
it.  Modules that only present results (plots, widgets, the CLI, the
evaluation) are left out.  A cached file that cannot be read, or that belongs to
other settings, is replaced with a warning.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch

from trc.errors import TRCError

# Which modules can change a cached file (see the module docstring).
# Paths relative to trc/, without .py; a name ending in "/" is a whole sub-package.
PRESENTATION_MODULES = frozenset({"evaluation/", "book/widgets", "book/fast", "book/__init__", "cli", "sweep/",
                                  "data/generate"})
MODEL_MODULES = frozenset({"models/", "training/"})

@lru_cache(maxsize=None)
def code_fingerprint(part: str) -> str:
    """A hash of the source of the ``trc`` modules that can change a cached ``part``, and torch's version.

    Args:
        part: ``"data"`` (demonstrations and optima: every module but the presentation and
            model modules) or ``"model"`` (every module but the presentation ones).

    Returns:
        16 hex digits.
    """
    if part not in ("data", "model"):
        raise TRCError(f"code fingerprint part must be 'data' or 'model', got {part!r}")
    root = Path(__file__).resolve().parents[1]  # trc/
    skip = PRESENTATION_MODULES | (MODEL_MODULES if part == "data" else frozenset())
    digest = hashlib.sha256(f"torch {torch.__version__}".encode())
    for path in sorted(root.rglob("*.py")):
        name = path.relative_to(root).with_suffix("").as_posix()
        if not any(name == s or (s.endswith("/") and name.startswith(s)) for s in skip):
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(fields: Mapping[str, Any], part: str) -> str:
    """16 hex digits naming ``fields`` as made by the current code of ``part``."""
    text = json.dumps({"fields": fields, "code": code_fingerprint(part)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_dataset(cache_dir: str | Path | None, role: str, problem, expert: str, n: int,
                   seed: int) -> dict[str, Any]:
    """Demonstrations of ``expert`` from ``n`` start states of ``problem`` drawn with ``seed``.

    Loaded from ``cache_dir`` when a file made by the same settings and code is there, else made
    (and saved there, unless ``cache_dir`` is None).  ``role`` (``"train"``, ``"test"``) names the file.
    """
    from trc.data.datasets import generate_dataset, load_dataset, save_dataset

    key = cache_key({"problem": problem.to_dict(), "expert": expert, "n": n, "seed": seed}, "data")
    if cache_dir is None:
        return generate_dataset(problem, n, expert, seed)
    path = Path(cache_dir) / f"{role}-{problem.name}-{expert}-n{n}-{key}.npz"
    if path.exists():
        try:
            data = load_dataset(path, problem)
            if data["metadata"].get("cache_key") == key:
                return data
            warnings.warn(f"{path} belongs to other settings; making it again", stacklevel=3)
        except TRCError as e:
            warnings.warn(f"{e}; making it again", stacklevel=3)
    data = generate_dataset(problem, n, expert, seed)
    data["metadata"]["cache_key"] = key
    save_dataset(path, data)
    return data


def cached_model(path: Path, problem, key: str):
    """The model cached at ``path`` for ``problem`` under ``key``, or None (missing, unreadable,
    or another experiment's, with a warning)."""
    from trc.models.checkpoint import load_checkpoint

    if not path.exists():
        return None
    try:
        model = load_checkpoint(path, problem=problem)
    except TRCError as e:
        warnings.warn(f"{e}; training again", stacklevel=3)
        return None
    if model.checkpoint_metadata.get("cache_key") != key:
        warnings.warn(f"{path} belongs to other settings; training again", stacklevel=3)
        return None
    return model


__all__ = ["MODEL_MODULES", "PRESENTATION_MODULES", "cache_key", "cached_dataset", "cached_model",
           "code_fingerprint"]
