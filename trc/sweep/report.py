"""``trc sweep --report``: a sweep's trials as rows, cells as mean +- std over seeds, a figure, JSON.

:func:`grid_results` is the Python entry point (the book's multi-seed tables call it)::

    rows, cells = grid_results("sweep.journal", "lambda")
    print(format_report(rows, cells))
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from trc.errors import TRCError
from trc.io import atomic_write

METRICS = ("cost", "success")


def _load(storage_url: str, study_name: str):
    import optuna

    from trc.sweep.storage import open_storage

    if "://" not in storage_url and not Path(storage_url).is_file():   # (opening a journal creates it)
        raise TRCError(f"there is no sweep journal {storage_url!r}")
    storage = open_storage(storage_url)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
    if study_name not in names:
        raise TRCError(f"there is no study {study_name!r} in {storage_url!r}")
    return optuna.load_study(storage=storage, study_name=study_name)


def grid_results(storage: str, study_name: str) -> tuple[list[dict], list[dict]]:
    """The study's trials and its cells.

    Returns:
        ``(rows, cells)``.  A row is one trial: ``number``, ``state`` (complete, pruned, fail,
        running, waiting, or duplicate: a copy of a grid cell closed unrun, :mod:`trc.sweep.worker`), ``flags`` (the swept train flags), ``cost`` (best validation cost; None
        unless complete), ``success`` and ``retry_of`` (the first trial of the chain of retries it belongs to, whose run folder
        it resumes, or None).  A cell is one
        setting of the swept flags other than ``seed``, over the complete trials: ``flags``,
        ``seeds`` (how many), ``cost_mean``, ``cost_std``, ``success_mean``, ``success_std`` (sample std,
        as ``statistics.stdev``; 0 for one seed).

    Raises:
        TRCError: no such study, or a study without trials.
    """
    from trc.sweep.worker import DUPLICATE

    study = _load(storage, study_name)
    trials = study.get_trials(deepcopy=False)
    if not trials:
        raise TRCError(f"study {study_name!r} in {storage!r} has no trials yet")
    rows = []
    for t in trials:
        done = t.state.name == "COMPLETE"
        state = "duplicate" if DUPLICATE in t.user_attrs else t.state.name.lower()
        rows.append({"number": t.number, "state": state,
                     "flags": t.user_attrs.get("flags") or t.system_attrs.get("fixed_params") or dict(t.params),
                     "cost": t.value if done else None,
                     "success": t.user_attrs.get("success") if done else None,
                     "retry_of": t.system_attrs.get("failed_trial")})
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["state"] == "complete":
            key = json.dumps({k: v for k, v in r["flags"].items() if k != "seed"}, sort_keys=True)
            groups.setdefault(key, []).append(r)
    cells = []
    for key, members in groups.items():
        cell = {"flags": json.loads(key), "seeds": len(members)}
        for m in METRICS:
            values = np.array([r[m] for r in members if r[m] is not None], dtype=float)
            cell[f"{m}_mean"] = float(values.mean()) if values.size else None
            cell[f"{m}_std"] = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else None)
        cells.append(cell)
    return rows, cells


def _flags_text(flags: dict) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in flags.items()) or "(no flags)"


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def format_report(rows: list[dict], cells: list[dict]) -> str:
    """The trials, one row each, then the cells as mean +- std over seeds."""
    lines = [f"{'trial':>5}  {'state':9}  {'val cost':>10}  {'success':>8}  flags"]
    for r in rows:
        cost = "" if r["cost"] is None else f"{r['cost']:.4g}"
        success = "" if r["success"] is None else f"{100 * r['success']:.1f}%"
        retry = "" if r["retry_of"] is None else f"  (retry of {r['retry_of']})"
        lines.append(f"{r['number']:>5}  {r['state']:9}  {cost:>10}  {success:>8}  {_flags_text(r['flags'])}{retry}")
    if cells:
        lines += ["", f"{'seeds':>5}  {'val cost (mean +- std)':>24}  {'success (mean +- std)':>22}  flags"]
        for c in sorted(cells, key=lambda c: json.dumps(c["flags"], sort_keys=True)):
            cost = f"{c['cost_mean']:.4g} +- {c['cost_std']:.2g}"
            success = (f"{100 * c['success_mean']:.1f} +- {100 * c['success_std']:.1f}%"
                       if c["success_mean"] is not None else "")
            lines.append(f"{c['seeds']:>5}  {cost:>24}  {success:>22}  {_flags_text(c['flags'])}")
    return "\n".join(lines)


def _order(text: str):
    value = json.loads(text)
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def plot_report(cells: list[dict], path: str | Path) -> None:
    """Cost and success (mean +- std over seeds) against each swept flag, PNG at ``path``."""
    from matplotlib.figure import Figure

    names = sorted({k for c in cells for k in c["flags"]}) or ["(none)"]
    fig = Figure(figsize=(max(4.5, 3.4 * len(names)), 5.2), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    for j, name in enumerate(names):
        values = sorted({json.dumps(c["flags"].get(name)) for c in cells}, key=_order)
        x = [values.index(json.dumps(c["flags"].get(name))) for c in cells]
        for i, metric in enumerate(METRICS):
            ax = axes[i, j]
            scale = 100 if metric == "success" else 1
            mean = [scale * (c[f"{metric}_mean"] if c[f"{metric}_mean"] is not None else math.nan) for c in cells]
            std = [scale * (c[f"{metric}_std"] or 0) for c in cells]
            ax.errorbar(x, mean, yerr=std, fmt="o", capsize=3, alpha=0.8)
            ax.set_xticks(range(len(values)), [_short(json.loads(v)) for v in values], rotation=30)
            ax.set_xlabel(name)
            ax.set_ylabel("validation cost" if metric == "cost" else "success (%)")
            ax.grid(alpha=0.3)
    fig.suptitle("mean +- std over seeds")
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))


def write_report(storage: str, study_name: str, output_dir: str | Path) -> str:
    """Print-ready table; writes ``report.png`` and ``report.json`` into ``output_dir``."""
    rows, cells = grid_results(storage, study_name)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_report(cells, out / "report.png")
    from trc.evaluation.analyze import _finite_or_none

    report = _finite_or_none({"study": study_name, "trials": rows, "cells": cells})
    text = json.dumps(report, indent=1, allow_nan=False)
    atomic_write(out / "report.json", lambda tmp: Path(tmp).write_text(text))
    return format_report(rows, cells) + f"\nwrote {out / 'report.png'} and {out / 'report.json'}"
