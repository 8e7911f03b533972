"""``trc analyze``: evaluate a checkpoint (and a baseline) iteration by iteration; table, figure, JSON.

    trc analyze --checkpoint runs/ps/best_model.pt --baseline runs/bc/best_model.pt \
        --data data/vanderpol_test.npz --output figures/refinement.png

Prints :func:`trc.evaluation.metrics.format_table` of both models (with ``--closed_loop``
also their closed-loop figures, :func:`trc.evaluation.closed_loop.closed_loop`), writes
:func:`trc.evaluation.plots.plot_refinement_curves` as PNG and SVG and every metric as
strict JSON beside the figure (NaN and infinity become null).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trc.errors import TRCError
from trc.evaluation.refinement_evaluator import RefinementEvaluator, solve_optimal_costs
from trc.evaluation.metrics import format_table, summarize
from trc.io import atomic_write, check_writable


def run_analyze(args) -> int:
    """``trc analyze``: evaluate a checkpoint (and a baseline), write figure + JSON, then print the table.

    Everything is checked before the evaluation (files, device, output folder), and the files are
    written before anything is printed, so a closed pipe (``| head -1``) cannot lose them.
    """
    from trc.models.checkpoint import load_checkpoint
    from trc.data.datasets import check_dataset, load_dataset
    from trc.evaluation.plots import plot_refinement_curves

    out = Path(args.output)
    if out.suffix.lower() not in ("", ".png"):
        raise TRCError(f"--output is the PNG's path (the SVG and the JSON go beside it), so it ends in .png, "
                       f"got {args.output!r}")
    if args.replan_every is not None and not args.closed_loop:
        raise TRCError("--replan_every sets the closed loop's replanning: it needs --closed_loop")
    args.replan_every = args.replan_every or 1
    for path in (out, out.with_suffix(".png"), out.with_suffix(".svg"), out.with_suffix(".json")):
        check_writable(path)
    data = load_dataset(args.data)   # read once; checked against the model's problem below
    model = _one_problem(load_checkpoint(args.checkpoint, problem=_named_problem(args.problem, data)), args.problem, data)
    baseline = None if args.baseline is None else _one_problem(load_checkpoint(args.baseline, problem=model.problem),
                                                               args.problem, data)
    check_dataset(data, f"dataset {str(args.data)!r}", model.problem)
    optimal = solve_optimal_costs(model.problem, data) if args.solve_optimal else None
    runs = {"model": model} if baseline is None else {"model": model, "baseline": baseline}
    metrics = {name: RefinementEvaluator(m, device=args.device, label=name).evaluate(
        data, iterations=args.iterations, optimal_costs=optimal) for name, m in runs.items()}
    summaries = {name: summarize(m) for name, m in metrics.items()}
    if args.closed_loop:
        for name, m in runs.items():
            # every plan refined as the open loop above is: --iterations, every iteration
            result = RefinementEvaluator(m, device=args.device, label=name).closed_loop(
                data, args.replan_every, iterations=args.iterations)
            summaries[name]["closed_loop"] = {**result.summary(metrics[name].optimal_costs,
                                                               metrics[name].expert_costs),
                                              "replan_every": args.replan_every,
                                              "iterations": args.iterations or m.num_iterations}
    plot_refinement_curves(metrics["model"], out, baseline=metrics.get("baseline"))
    paths = {"model": args.checkpoint, "baseline": args.baseline}
    report = {name: {"checkpoint": paths[name], "summary": summaries[name], "metrics": metrics[name].to_dict()}
              for name in runs}
    report["data"] = args.data
    json_path = out.with_suffix(".json")
    text = json.dumps(_finite_or_none(report), indent=1, allow_nan=False)
    atomic_write(json_path, lambda tmp: Path(tmp).write_text(text))
    print(format_table({m.display_name: summaries[name] for name, m in metrics.items()}))
    print(f"wrote {out.with_suffix('.png')}, {out.with_suffix('.svg')} and {json_path}")
    return 0


def _named_problem(name: str | None, data: dict):
    """The problem ``--problem`` names, with the dataset's parameters where ``data`` is of that problem
    (``--horizon``/``--dt`` given to ``trc generate``), as ``trc train`` reads it; None without ``--problem``."""
    from trc.data.datasets import dataset_problem
    from trc.problems import get_problem

    if name is None:
        return None
    named = get_problem(name)
    made_for = dataset_problem(data) if "problem" in data["metadata"] else None
    return made_for if made_for is not None and made_for.name == named.name else named


def _one_problem(model, name: str | None, data: dict):
    """A multi-problem model's planner of ``--problem`` (default: the dataset's); a single-problem model as is."""
    if not hasattr(model, "planners"):
        return model
    from trc.data.datasets import dataset_problem

    return model.planner(name or dataset_problem(data).name)


def _finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (strict JSON has neither)."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def add_analyze_command(sub) -> None:
    """Add ``trc analyze`` to the CLI's subparsers."""
    from trc.cli import positive_int

    p = sub.add_parser("analyze", help="measure refinement per iteration; table, figure and JSON",
                       description="Evaluate a checkpoint (and optionally a baseline) on a dataset, "
                                   "iteration by iteration, in the problem's simulator.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (.pt)")
    p.add_argument("--data", required=True, help="test dataset (.npz from trc generate)")
    p.add_argument("--problem", help="problem name or module:Name; must match the checkpoint (default: the checkpoint's; for a "
                        "multi-problem checkpoint, the dataset's, which must be one of its problems)")
    p.add_argument("--output", default="refinement_analysis.png",
                   help="figure path; the PNG goes here, the SVG and the metrics JSON beside it")
    p.add_argument("--baseline", help="a second checkpoint shown beside the model, e.g. behavior cloning (default: none)")
    p.add_argument("--iterations", type=positive_int,
                   help="refinement iterations to run, in the open loop and in every plan of --closed_loop "
                        "(default: each model's own; more is allowed)")
    p.add_argument("--solve_optimal", action="store_true",
                   help="solve every test instance for its optimum to report cost / optimum "
                        "(not needed when the data's expert is 'optimal')")
    p.add_argument("--closed_loop", action="store_true",
                   help="also run each model as a receding-horizon controller (plan T steps from the "
                        "current state, apply the first controls, replan) and report it beside the open loop")
    p.add_argument("--replan_every", type=positive_int, default=None,
                   help="with --closed_loop: controls applied per plan, 1..T (default 1: replan every step)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")
    p.set_defaults(func=run_analyze)
