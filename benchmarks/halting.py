"""Adaptive halting on Van der Pol (or ``--problem``), and running past the trained iterations.

Trains (``trc train``, skipped where ``--runs`` already holds the checkpoint), on 1000 LQR
demonstrations:

* ``ps``: process supervision, K = 2;
* ``bc``: behavior cloning, K = 2;
* ``act``: ``--act --max_iterations 8 --use_value_predictor --heads_only``: the halting and
  value heads trained on the fixed ``ps`` planner;

then, on ``--test_samples`` held-out starts against the optimum (both cached as in
``benchmarks/vanderpol.py``), prints for the halting model and each halting rule
(``halt``: q_halt > 0, the default; ``q``: q_halt > q_continue; ``value``: the value
head's predicted improvement below the tolerance) the success, cost / optimum, mean
iterations and their histogram, cost at halting over cost after all K_max, and the
wall and CPU time of ``plan`` on all starts with halting against ``halt=False``; and for
every model the cost after 2K iterations over the cost after K, with the model's
keep-the-best rule past K and without it (the drift it prevents).

    python benchmarks/halting.py --runs runs/halting                  # trains what is missing
    python benchmarks/halting.py --epochs 2 --act_epochs 1 --test_samples 100 --runs /tmp/h   # smoke test

Targets: success >= 99.5 %, cost / optimum <= 1.01, mean iterations <= 3 of 8, cost at
halting within 0.3 % of all 8, plan wall time with halting <= 0.6x of all 8 (1 thread);
cost after 2K within 0.3 % of K for BC and PS.

Measured (defaults, tolerance 1e-3, 20 epochs of the heads, 1000 test starts, 1 thread, a
2-core machine shared with other jobs): all 8 iterations 100 % success, 1.0078x the optimum;
rule ``halt`` 99.50 %, 1.0080x, 1.66 iterations of 8, cost at halting / all 8 1.00020, plan
wall time 0.40x (CPU 0.61x); rule ``q`` 99.90 %, 1.0074x, 2.60 iterations, 0.99960, 0.30x;
rule ``value`` 98.0 %, 1.20 iterations, 1.00179.  Cost after 2K / after K: BC 0.99203
(1.01267 without keeping the best past K), PS 0.99921, halting model 0.99969.  Before the
heads were trained on a fixed planner (the whole model fine-tuned, best epoch by cost) the
kept head halted after 6.0 iterations at 0.92x the wall time: the cost picked the epoch whose
head halted least.

The same on the other problems (``--problem``; the multi-problem issue asks that easy problems
halt sooner): the double integrator (PS alone 100 %, 1.0019x after all 8) halts after 1.01
iterations with ``halt`` (995 of 1000 starts after the first; ``q`` 1.17, ``value`` 1.15), at
1.00007 of all 8 and 0.22x the wall time; the pendulum (its recipe, open loop: 0.1 %, 5.38x
after all 8, its plans drifting up past the second iterate) after 4.93 (``q`` 3.81, ``value``
1.38).  Alone, then, the order is double integrator 1.01 < Van der Pol 1.66 < pendulum 4.93;
in one model for the four (``benchmarks/multi_problem.py``) the shared planner keeps lowering
the double integrator's cost past Van der Pol's, and its head follows.  Cost after 2K / after K
on the double integrator: BC 0.99709, PS 0.99969; on the pendulum 0.96653 and 0.88882 (without
keeping the best past K: 1.01857 and 1.08791).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from vanderpol import cached, test_set  # noqa: E402  (the shared cached data and optimum)

from trc import get_problem  # noqa: E402
from trc.cli import main as trc_main  # noqa: E402
from trc.data.datasets import generate_dataset  # noqa: E402
from trc.models.checkpoint import load_checkpoint  # noqa: E402


def train(name: str, flags: list[str], runs: Path, data: Path) -> Path:
    """``trc train`` into ``runs/name`` unless its best checkpoint exists; prints the time taken."""
    out = runs / name
    if not (out / "best_model.pt").exists():
        wall, cpu = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            status = trc_main(["train", "--data", str(data), "--output_dir", str(out), "--quiet",
                               "--threads", str(torch.get_num_threads()), *flags])
        if status != 0:
            raise SystemExit(f"trc train {name} exited with {status}")
        print(f"  trained {name}: wall {time.perf_counter() - wall:.0f} s, CPU {time.process_time() - cpu:.0f} s",
              flush=True)
    return out / "best_model.pt"


def evaluate(problem, x0: torch.Tensor, U) -> dict[str, np.ndarray]:
    """Cost and success of plans, simulated in float64 with the bound enforced."""
    ev = problem.evaluate(x0.double(), torch.as_tensor(U).double())
    return {"cost": ev["cost"].numpy(), "success": ev["success"].numpy()}


def timed_plan(model, x0: np.ndarray, repeats: int, **kwargs) -> tuple[float, float]:
    """Median wall and CPU seconds of ``model.plan(x0, **kwargs)``."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        model.plan(x0, **kwargs)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return float(np.median(walls)), float(np.median(cpus))


def without_keep_best(model, iterations: int):
    """The same weights whose forward runs ``iterations`` plain refinements (no keep-the-best past K)."""
    model.config = dataclasses.replace(model.config, num_outer_cycles=iterations)
    return model


def halting_rows(model, problem, x0: np.ndarray, optimum: np.ndarray, repeats: int) -> list[dict]:
    K = model.num_iterations
    full = evaluate(problem, torch.as_tensor(x0), model.plan(x0, halt=False))
    full_wall, full_cpu = timed_plan(model, x0, repeats, halt=False)
    print(f"  all {K} iterations: success {100 * full['success'].mean():.2f} %, cost/opt "
          f"{full['cost'].mean() / optimum.mean():.4f}, plan {len(x0)} starts {1e3 * full_wall:.0f} ms "
          f"(CPU {1e3 * full_cpu:.0f} ms)")
    every = model.plan(x0, halt=False, all_iterations=True)                       # (N, K+1, T, n_u)
    curve = [evaluate(problem, torch.as_tensor(x0), every[:, k])["cost"].mean() / full["cost"].mean()
             for k in range(K + 1)]
    print(f"  cost of iterate k / all {K}, k = 0..{K}: " + ", ".join(f"{c:.4f}" for c in curve))
    rows = []
    for rule in ("halt", "q", "value"):
        U, info = model.plan(x0, halt=rule, return_info=True)
        ev = evaluate(problem, torch.as_tensor(x0), U)
        wall, cpu = timed_plan(model, x0, repeats, halt=rule)
        it = info["iterations"]
        row = {"rule": rule, "success_rate": 100 * ev["success"].mean(),
               "cost_over_optimum": ev["cost"].mean() / optimum.mean(),
               "mean_iterations": float(it.mean()),
               "histogram": np.bincount(it, minlength=K + 1)[1:].tolist(),
               "cost_at_halting_over_all": ev["cost"].mean() / full["cost"].mean(),
               "wall_over_all": wall / full_wall, "cpu_over_all": cpu / full_cpu,
               "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu}
        rows.append(row)
        print(f"  rule {rule:5s}: success {row['success_rate']:.2f} %, cost/opt {row['cost_over_optimum']:.4f}, "
              f"iterations {row['mean_iterations']:.2f} of {K} (histogram 1..{K}: {row['histogram']}), "
              f"cost at halting / all {K} {row['cost_at_halting_over_all']:.5f}, plan wall "
              f"{row['wall_ms']:.0f} ms = {row['wall_over_all']:.2f}x (CPU {row['cpu_over_all']:.2f}x)", flush=True)
    return rows


def past_k_row(name: str, path: Path, problem, x0: np.ndarray) -> dict:
    model = load_checkpoint(path)
    K = model.num_iterations
    at_k = evaluate(problem, torch.as_tensor(x0), model.plan(x0, halt=False))["cost"].mean()
    at_2k = evaluate(problem, torch.as_tensor(x0), model.plan(x0, halt=False, iterations=2 * K))["cost"].mean()
    plain = without_keep_best(load_checkpoint(path), 2 * K)
    drift = evaluate(problem, torch.as_tensor(x0), plain.plan(x0, halt=False))["cost"].mean()
    row = {"model": name, "K": K, "cost_2K_over_K": at_2k / at_k, "cost_2K_over_K_without_keep_best": drift / at_k}
    print(f"  {name:4s} K={K}: cost after {2 * K} / after {K} = {row['cost_2K_over_K']:.5f} "
          f"(without keep-the-best past K: {row['cost_2K_over_K_without_keep_best']:.5f})", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="vanderpol", help="the problem (the targets are Van der Pol's)")
    ap.add_argument("--runs", default="runs/halting", help="folder of the trained checkpoints (kept)")
    ap.add_argument("--train_samples", type=int, default=1000)
    ap.add_argument("--test_samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=120, help="epochs of the process-supervised K = 2 model")
    ap.add_argument("--bc_epochs", type=int, default=60, help="epochs of the behavior-cloned K = 2 model")
    ap.add_argument("--act_epochs", type=int, default=20, help="epochs of the halting model's fine-tuning")
    ap.add_argument("--halt_tolerance", type=float, default=None,
                    help="the halting model's --halt_tolerance (default: trc train's)")
    ap.add_argument("--repeats", type=int, default=5, help="timings: median of this many plans")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default="data/benchmark_cache")
    ap.add_argument("--output", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    problem = get_problem(args.problem)
    cache, runs = Path(args.cache), Path(args.runs)
    data = cache / f"{problem.name}_lqr_{args.train_samples}.npz"
    cached(data, lambda: generate_dataset(problem, args.train_samples, "lqr", seed=0))
    test, optimum = test_set(problem, args.test_samples, cache)
    x0 = test["initial_states"].astype(np.float32)
    print(f"{problem.name}: {args.train_samples} LQR demonstrations, {len(x0)} test states, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    ps = train("ps", ["--process_weight", "1", "--epochs", str(args.epochs)], runs, data)
    bc = train("bc", ["--process_weight", "0", "--epochs", str(args.bc_epochs)], runs, data)
    act = train("act", ["--process_weight", "1", "--act", "--max_iterations", "8", "--use_value_predictor",
                        "--init_from", str(ps), "--heads_only", "--epochs", str(args.act_epochs), "--lr", "1e-3",
                        *(["--halt_tolerance", str(args.halt_tolerance)] if args.halt_tolerance is not None else [])],
                runs, data)

    print("halting model (--act, K_max 8):")
    rows = halting_rows(load_checkpoint(act), problem, x0, optimum, args.repeats)
    print("running past the trained iterations:")
    past = [past_k_row(name, path, problem, x0) for name, path in (("bc", bc), ("ps", ps), ("act", act))]
    if args.output:
        Path(args.output).write_text(json.dumps({"halting": rows, "past_k": past}, indent=1))


if __name__ == "__main__":
    main()
