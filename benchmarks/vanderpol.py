"""Van der Pol results: behavior cloning against process supervision, trained by ``trc train``.

Trains from ``--train_samples`` LQR demonstrations (``trc train`` with its
defaults; only ``--process_weight``, ``--loss_variant`` and ``--seed`` change)
and evaluates the best checkpoint on ``--test_samples`` held-out start states:
success rate, mean final error, mean cost over the optimum's (the optimal
expert on the same states, cached on disk), mean cost per iteration, the share
of samples whose cost falls at every iteration, and the wall and CPU time of
training.  ``--seeds N`` repeats every run and adds mean +- std.

    python benchmarks/vanderpol.py                                  # BC and PS, 1 seed
    python benchmarks/vanderpol.py --seeds 5
    python benchmarks/vanderpol.py --problem vanderpol_constrained
    python benchmarks/vanderpol.py --lambdas 0,0.01,0.1,0.5,1,10 --variants seed,ratio,monotone
    python benchmarks/vanderpol.py --epochs 2 --train_samples 100 --test_samples 100   # smoke test

Targets (2-core CPU): BC success >= 95 %; PS success >= 99.5 % on every seed,
PS cost / optimum <= 1.01 (<= 1.10 on ``vanderpol_constrained``), >= 95 % of
samples improving at every iteration, <= 5 min per training run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trc import get_problem
from trc.models.checkpoint import load_checkpoint
from trc.cli import main as trc_main
from trc.data.datasets import generate_dataset, load_dataset, save_dataset
from trc.evaluation.refinement_evaluator import RefinementEvaluator
from trc.evaluation.metrics import summarize
from trc.data.experts import lqr_controls, optimal_controls
from trc.training.process_supervision import DEFAULT_VARIANT
from trc.training.train import DEFAULTS

FIELDS = ("success_rate", "mean_final_error", "cost_over_optimum", "pct_monotonic", "wall_s", "cpu_s")


def cached(path: Path, make):
    """``make()`` saved to ``path`` (a dataset ``.npz``) the first time, loaded after."""
    if not path.exists():
        t = time.perf_counter()
        save_dataset(path, make())
        print(f"  wrote {path} in {time.perf_counter() - t:.0f} s", flush=True)
    return load_dataset(path)


def test_set(problem, n: int, cache: Path) -> tuple[dict, np.ndarray]:
    """Held-out start states (seed 12345) with LQR demonstrations, and the optimum's costs on them."""
    test = cached(cache / f"{problem.name}_test_{n}.npz", lambda: generate_dataset(problem, n, "lqr", seed=12345))
    opt = cached(cache / f"{problem.name}_test_{n}_optimal.npz",
                 lambda: generate_dataset_at(problem, test["initial_states"], "optimal"))
    return test, opt["costs"].astype(np.float64)


def generate_dataset_at(problem, x0: np.ndarray, expert: str) -> dict:
    """A dataset of the expert's plans from the given start states (costs in float64, then stored)."""
    x = torch.as_tensor(x0, dtype=torch.float64)
    U = (optimal_controls if expert == "optimal" else lqr_controls)(problem, x)
    ev = problem.evaluate(x, U)
    return {"initial_states": x0, "target_states": problem.target_like(x).numpy().astype(np.float32),
            "state_trajectories": ev["X"].numpy().astype(np.float32),
            "control_sequences": U.numpy().astype(np.float32), "costs": ev["cost"].numpy(),
            "metadata": {"problem": problem.to_dict(), "expert": expert}}


def lqr_row(problem, test: dict, optimal_costs: np.ndarray) -> dict:
    """Success, final error and cost over the optimum of the LQR teacher's plans on the test states."""
    ev = problem.evaluate(torch.as_tensor(test["initial_states"], dtype=torch.float64),
                          torch.as_tensor(test["control_sequences"], dtype=torch.float64))
    return {"success_rate": 100 * ev["success"].double().mean().item(),
            "mean_final_error": ev["final_error"].mean().item(),
            "cost_over_optimum": ev["cost"].mean().item() / optimal_costs.mean()}


def run(data_path: Path, problem, test: dict, optimal_costs: np.ndarray, process_weight: float, variant: str,
        seed: int, epochs: int | None, out: Path) -> dict:
    """One ``trc train`` run and the evaluation of its best checkpoint."""
    flags = ["train", "--data", str(data_path), "--output_dir", str(out), "--process_weight", str(process_weight),
             "--seed", str(seed), "--threads", str(torch.get_num_threads()), "--quiet"]
    if process_weight > 0:
        flags += ["--loss_variant", variant]
    if epochs is not None:
        flags += ["--epochs", str(epochs)]
    wall, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()):
        status = trc_main(flags)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if status != 0:
        raise SystemExit(f"trc train exited with {status}")
    model = load_checkpoint(out / "best_model.pt")
    metrics = RefinementEvaluator(model, problem).evaluate(test, optimal_costs=optimal_costs)
    s = summarize(metrics)
    return {"success_rate": s["success_rate"], "mean_final_error": s["mean_final_error"],
            "cost_over_optimum": s["cost_over_optimum"], "pct_monotonic": s["pct_monotonic"],
            "cost_per_iteration_over_optimum": [c / optimal_costs.mean() for c in s["mean_cost_per_iteration"]],
            "wall_s": wall, "cpu_s": cpu,
            "best_epoch": json.loads((out / "history.json").read_text())["best_epoch"]}


def fmt(row: dict) -> str:
    parts = [f"success {row['success_rate']:6.2f} %", f"final err {row['mean_final_error']:.4f}",
             f"cost/opt {row['cost_over_optimum']:.4f}"]
    if "pct_monotonic" in row:
        parts.append(f"monotone {row['pct_monotonic']:5.1f} %")
    if "cost_per_iteration_over_optimum" in row:
        parts.append("per-iter " + " ".join(f"{c:.3f}" for c in row["cost_per_iteration_over_optimum"]))
    if "wall_s" in row:
        parts.append(f"wall {row['wall_s']:5.0f} s (CPU {row['cpu_s']:4.0f} s)")
    return ", ".join(parts)


def mean_std(rows: list[dict]) -> str:
    out = []
    for f in FIELDS:
        values = [r[f] for r in rows]
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        out.append(f"{f} {statistics.mean(values):.4g} +- {std:.2g} (min {min(values):.4g}, max {max(values):.4g})")
    return "; ".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="vanderpol")
    ap.add_argument("--seeds", type=int, default=1, help="repeat every run with seeds 0..N-1")
    ap.add_argument("--lambdas", default=None,
                    help=f"process weights to compare (default: 0 and {DEFAULTS['process_weight']})")
    ap.add_argument("--variants", default=DEFAULT_VARIANT, help="loss variants for the runs with lambda > 0")
    ap.add_argument("--train_samples", type=int, default=1000)
    ap.add_argument("--test_samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=None, help="override trc train's default (for quick checks)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--cache", default="data/benchmark_cache", help="folder for the datasets and the optimum")
    ap.add_argument("--output", default=None, help="write every result as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    problem = get_problem(args.problem)
    cache = Path(args.cache)
    print(f"{problem.name}: {args.train_samples} LQR demonstrations, {args.test_samples} test states, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    data_path = cache / f"{problem.name}_lqr_{args.train_samples}.npz"
    cached(data_path, lambda: generate_dataset(problem, args.train_samples, "lqr", seed=0))
    test, optimal_costs = test_set(problem, args.test_samples, cache)
    print(f"  LQR teacher on the test states: {fmt(lqr_row(problem, test, optimal_costs))}")

    lambdas = [0.0, DEFAULTS["process_weight"]] if args.lambdas is None else \
        [float(v) for v in args.lambdas.split(",")]
    configs = [(lam, v) for lam in lambdas for v in (args.variants.split(",") if lam > 0 else ["bc"])]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for lam, variant in configs:
            rows = []
            for seed in range(args.seeds):
                row = run(data_path, problem, test, optimal_costs, lam, variant, seed, args.epochs,
                          Path(tmp) / f"{lam}_{variant}_{seed}")
                rows.append(row)
                name = "BC" if lam == 0 else f"PS {variant} lambda={lam:g}"
                print(f"  {name:22s} seed {seed}: {fmt(row)}", flush=True)
                results.append({"process_weight": lam, "variant": variant, "seed": seed, **row})
            if args.seeds > 1:
                print(f"  {'':22s} mean +- std over {args.seeds} seeds: {mean_std(rows)}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
