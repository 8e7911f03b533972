"""One model for many problems: a multi-problem model against single-problem models, per problem.

Trains (``trc train``, skipped where ``--runs`` already holds the checkpoint), from
``--train_samples`` LQR demonstrations per problem (cached as in ``benchmarks/beyond_teacher.py``):

* ``multi``: one model for all ``--problems``
  (``trc train --problem a,b,... --data a.npz,b.npz,...``, each problem with its recipe, trained
  on the log of its loss: ``--problem_balance log``, the default);
* ``multi_act``: ``multi`` with a halting head (``--act --heads_only``: the planner kept, the
  head trained for ``--act_epochs``): how many iterations each problem takes when the model
  stops on its own;
* ``single_<problem>``: a model of the same preset for each problem alone (its recipe's epochs);
  its parameter count is printed next to the multi-problem model's (the same network without
  the problem embedding, and for a shorter horizon, smaller decoders).

Then, on ``--test_samples`` held-out starts per problem against the optimum (cached), prints for
every model and problem the open-loop success and cost over the optimum, the closed loop
(replanning every step) for the pendulum, the halting model's mean iterations, and the
training wall times.

    python benchmarks/multi_problem.py --runs runs/multi                       # trains what is missing
    python benchmarks/multi_problem.py --epochs 2 --act_epochs 1 --closed_loop_steps 2 --test_samples 50 --runs /tmp/m   # smoke test

Targets (multi-problem model, held-out starts vs the optimum): double_integrator >= 99 % and
<= 1.01x; vanderpol >= 99.5 % and <= 1.01x; vanderpol_constrained >= 75 % and <= 1.03x;
pendulum (closed loop) >= 93 % and <= 1.07x; halting model's mean iterations
double_integrator < vanderpol < pendulum; the multi-problem training <= 20 min on a 2-core CPU.

Measured (defaults: 300 epochs at lr 1e-3, the 'log' balance, each problem's own AdamW moments and
hidden biases, each problem's recipe less what picks an epoch in closed loop and with
``MULTI_PROBLEM_RECIPES``, the best epoch picked on the problems judged open loop, then the
pendulum tuned in closed loop for 1000 steps and the double integrator on its own objective for 80
epochs, each through its own rank-8 adapter; 1 thread on a 2-core machine, two runs side by side):

=====================  ==========================  ===================  ==========================
problem                multi, seed 0; 1; ...; 5    single (its recipe)  multi + halting head (K_max
                                                                        8): it. used (its targets
                                                                        ask for), seed 0; ...; 5
=====================  ==========================  ===================  ==========================
double_integrator      100.0 %, 1.0020x;           100.0 %, 1.0008x     1.02 (1.95); 1.00 (1.83);
                       100.0 %, 1.0025x;                                1.01 (1.58); 1.00 (1.81);
                       100.0 %, 1.0019x;                                1.00 (1.74); 1.00 (1.64)
                       100.0 %, 1.0018x;
                       100.0 %, 1.0016x;
                       100.0 %, 1.0016x
vanderpol              99.8 %, 1.0069x;            99.9 %, 1.0058x      1.78 (2.51); 1.42 (2.41);
                       100.0 %, 1.0077x;                                1.18 (2.39); 1.47 (2.49);
                       100.0 %, 1.0082x;                                1.30 (2.65); 1.83 (2.57)
                       100.0 %, 1.0066x;
                       100.0 %, 1.0076x;
                       100.0 %, 1.0067x
vanderpol_constrained  79.6 %, 1.0026x;            80.3 %, 1.0063x      1.51 (2.35); 1.41 (2.32);
                       77.8 %, 1.0023x;                                 1.32 (2.35); 1.45 (2.41);
                       78.3 %, 1.0024x;                                 1.30 (2.27); 1.38 (2.26)
                       81.4 %, 1.0024x;
                       80.4 %, 1.0023x;
                       78.7 %, 1.0022x
pendulum (closed)      93.7 %, 1.14x;              96.3 %, 1.10x        5.59 (3.54); 5.00 (3.07);
                       97.9 %, 1.11x;              (5 seeds)            5.28 (3.84); 4.92 (3.39);
                       96.9 %, 1.11x;                                   5.72 (3.96); 4.78 (3.30)
                       92.7 %, 1.26x;
                       95.5 %, 1.12x;
                       94.7 %, 1.13x
=====================  ==========================  ===================  ==========================

The multi-problem model has 158,568 parameters: 94,856 used by every problem (2,560 of them the
hidden biases; the single models have 92,040, the double integrator's 59,230) and 63,712 in the four
problems' adapters, of which the pendulum's and the double integrator's 15,928 each act (the others
are off).  ``trc train`` took 1140 and 1129 s with seeds 1 and 3 (CPU 1126 and 1116 s), side by side,
about 8 minutes of it the pendulum's tuning and 15 s the double integrator's, and 1295 and 1313 s
(21.6 and 21.9 min; CPU 1282 and 1302 s) with seeds 4 and 5, side by side half an hour later.  The
machine had slowed, not the seeds: the pendulum's tuning, the same work with every seed, took 507-511
s in the first pair and 585-586 s in the second, and seeds 1 and 3 run again after the second pair
(stopped after 216 and 211 epochs) validated every epoch to the same figures as their first runs
while taking 1.32 and 1.37 times as long.  Seed 4 trained first beside the unit tests and another
run (three processes on two cores): 1300 s and the same figures as alone, to the bit.  Seeds 0 and 2
were first trained by the code before the double integrator's tuning (the same up to it) and finished
with ``trc train --resume``, which ran only that tuning (19 s each).  Trained afresh on a later day,
side by side, they gave every figure above again to the last digit, the halting heads' included, in
1428 and 1436 s (23.8 and 23.9 min; the epochs 12.2 min, the pendulum's tuning 11.3 min against 8.5
before), on a machine slower again: their heads trained in 174-175 s, the others' in 122-154 s.  Met
with every seed: the double integrator, Van der Pol, constrained Van der Pol and the halting order; the
pendulum's success with seeds 0, 1, 2, 4 and 5 (mean 95.2 %; seed 3: 92.7 %); the 20 minutes with
seeds 1 and 3, not with 4 and 5 nor, fresh, 0 and 2 on the slower machine.  Seed 0 alone on both
cores (``--threads 2``), on a later day: 1457 s (24.3 min; CPU 2849 s; the epochs 13.0 min, the tunings
11.3 min), every figure of the table the same to the last digit: the second thread buys no time (the
operations are small), so the 20 minutes are a matter of the machine's speed, not of its cores.
Missed: the pendulum's cost (1.11-1.26x; its single model 1.10x).

How the double integrator got there (seeds 0 and 2, the same trained models, test starts): the shared
network left it at 1.0073 and 1.0107x the optimum (its own model 1.0008x), its cost falling over more
refinements than Van der Pol's: the halting heads' targets asked for 3.06 and 3.44 iterations, Van der
Pol's 2.51 and 2.39, and the heads stopped it later (2.67 and 3.17 against 1.80 and 1.69).  Its own
adapter, embedding row and biases tuned on its own objective (``trc.training.adapter_tuning``) at
a constant lr 1e-3: 40 epochs brought 1.0029 and 1.0036x, 80 on seed 2 1.0019x; with the trainer's
warmup and cosine decay (the default), 40 epochs 1.0026 / 1.0028x (13 s beside two other runs), 80
epochs 1.0020 / 1.0019x (21 s), and at lr 3e-3 40 epochs 1.0033 / 1.0020x.  Its refinement then
settles at once: the targets ask for 1.95 and 1.58 iterations and the heads stop after 1.02 and 1.01.
The checkpoints of every epoch got cheaper in the same change (a check of the payload's types instead
of loading each 7 MB file back, and an improving epoch's written once), which pays for those 15 s:
seeds 1 and 3 took 1153 and 1185 s before it.

How the pendulum got there, all on the same three shared models (the 1000 test starts, closed loop):

* untuned, with the states its closed loop visits added as starts during the epochs (the single
  recipe's ``visited_starts``): 71.2 %, 1.83x; 74.4 %, 1.55x; 64.9 %, 1.99x, the run 17.9-20.2
  minutes (the visits' closed loops took about 1.5 s of every 3.6 s epoch);
* tuning the shared model in closed loop afterwards as its single model is
  (``trc.training.closed_loop_tuning``: planning every 4 steps, gradient cut every 40, critic 0.5),
  its own parameters only (its row of the embedding and of every hidden bias, 704 numbers): with
  lr 1e-3, seed 0's epoch 254 from 74.5 % at 1.64x to 86.2 % at 1.35x (272 s), seed 2's epoch 190
  from 59.0 % at 2.27x to 30.5 % at 1.37x (the tuning keeps its cheapest validated state), seed 2's
  epoch 295 from 64.9 % at 1.99x to 74.0 % at 1.69x, kept at step 25 of a tuning that fell to 0 %
  validation success by step 425; with lr 1e-4 it rose more steadily to 72.9 % at 1.73x.  704
  biases do not carry it far;
* every parameter, with the other problems' plans held to the untuned ones (relative squared
  error on 256 training starts each, added to the cost; no critic), seed 2's epoch 295: with lr
  1e-3 and weight 10 the pendulum reached 90.6 % at 1.19x in 100 steps (47 s) while the double
  integrator fell to 4.1 % and Van der Pol to 5.3 %; with lr 1e-4 and weight 1000, 83.1 % at 1.34x
  with the double integrator at 93.9 %, 1.0225x.  Adam's first steps move every shared weight by
  about the learning rate before the hold's gradient, zero at the start, can answer;
* its own low-rank adapter (rank 8, zero at first, so the model plans as before) on every Linear
  layer of the shared network, tuned with its own rows, the rest frozen (``trc.training.adapter_tuning``):
  only the pendulum's plans can change.  600 steps at lr 1e-3, about 300 s: 90.7 %, 1.35x; 95.3 %,
  1.11x; 97.3 %, 1.09x (the run 23-25 minutes with the visits).  The tuning's validation swings
  (seed 0 between 3 and 90 %), as the single model's does; a cosine decay of its learning rate
  smoothed it but kept 93.4 % at 1.25x (seed 0) and 94.2 % at 1.24x (seed 2), no better overall;
* the default: the adapter without the visits, which its tuning replaces at a third of their time:
  600 steps 93.7 %, 1.14x (seed 0) and 85.6 %, 1.17x (seed 2), the run 15 minutes; 1000 steps the
  figures of the table.

What each part buys (seed 0; each part patched into the code of the commit before them; two runs
at a time, 1140-1168 s each; "its own recipe": imitation of its self-play archive, its wider
exploration, stitching and neighbours):

==============================  ================  ================  ================  ===============
variant                         double integr.    Van der Pol       constrained       pendulum (closed)
==============================  ================  ================  ================  ===============
the problem-free recipe for     100.0 %, 1.0030x  100.0 %, 1.0071x  77.8 %, 1.0078x   0.0 %, 5.44x
the pendulum (the old default)
its own recipe, one set of      96.8 %, 1.0150x   99.9 %, 1.0124x   56.7 %, 1.0132x   67.7 %, 1.84x
moments, the embedding alone
... + each problem's moments    99.0 %, 1.0098x   99.9 %, 1.0081x   81.3 %, 1.0025x   2.4 %, 3.01x
... + hidden biases             99.6 %, 1.0073x   99.6 %, 1.0091x   63.3 %, 1.0102x   75.8 %, 1.56x
... + both (the default)        98.2 %, 1.0100x   100.0 %, 1.0073x  81.4 %, 1.0024x   70.7 %, 1.75x
==============================  ================  ================  ================  ===============

With one set of AdamW moments the pendulum's large gradients (the 'log' balance on its small
imitation loss) set the scale of every step, so the other problems barely moved the shared weights:
the pendulum swung up and the others fell back.  With each problem's own moments every problem steps
at the learning rate, and three problems against one pulled the network away from the swing-up.
Hidden biases give each problem units of its own to switch on, and with them the pendulum keeps its
swing-up when the others step as hard as it does.  Neither part alone holds all four.

Before these parts (embedding alone, one set of moments, the pendulum's problem-free settings) the
shared model never swung the pendulum up (0.0 % at 5.44x with seeds 0-2), and no variant measured
then held all four: the pendulum's own recipe with the ``medium`` preset (348,616 parameters)
gave 63.3 % with constrained Van der Pol at 58.7 %; with the pendulum's loss taken without the log,
63.3 % with constrained at 48.9 %.  The halting head of that model stopped the double integrator
later than Van der Pol on seeds 0-2 (2.75 and 1.71 iterations; 2.25 and 1.47; 2.94 and 2.29).  Earlier defaults, seed 0: 250
epochs with ``log`` reached 100.0 %, 99.7 %, 74.7 % at 1.0033x, 1.0086x, 1.0107x; with the plain sum of the losses (``none``) 100.0 %, 98.6 %, 61.3 % at 1.0027x,
1.0226x, 1.0286x; 120 epochs at the single-problem lr 3e-3 99.7 %, 95.3 %, 45.2 %.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from beyond_teacher import evaluate, train  # noqa: E402
from vanderpol import cached, test_set  # noqa: E402

from trc import get_problem  # noqa: E402
from trc.data.datasets import generate_dataset  # noqa: E402
from trc.evaluation.refinement_evaluator import RefinementEvaluator  # noqa: E402
from trc.io import atomic_write  # noqa: E402
from trc.models.checkpoint import load_checkpoint  # noqa: E402
from trc.models.halting import DEFAULT_TOLERANCE, first_halt, stop_targets  # noqa: E402

PROBLEMS = "double_integrator,vanderpol,vanderpol_constrained,pendulum"
CLOSED_LOOP = {"pendulum"}   # judged replanning every step; the others open loop


def trained(out: Path, data: str, problems: str, flags: list[str], epochs: int | None, seed: int
            ) -> tuple[Path, float, float]:
    """``out/best_model.pt``, trained unless it exists; the training wall and CPU times (nan if it existed).

    The run takes one thread, so its CPU time is its wall time on a machine it has to itself."""
    best = out / "best_model.pt"
    if best.exists():
        return best, float("nan"), float("nan")
    times = train(data, problems, flags, seed, epochs, out)
    return best, times["train_wall_s"], times["train_cpu_s"]


def took(wall: float, cpu: float | None = None) -> str:
    """How long a run trained, or that it was reused from ``--runs`` (its times unknown here)."""
    if np.isnan(wall):
        return "reused from --runs"
    return f"trained in {wall:.0f} s" + ("" if cpu is None else f" ({wall / 60:.1f} min; CPU {cpu:.0f} s)")


def row(planner, problem, test: dict, optimum: np.ndarray) -> dict:
    """Success and cost over the optimum (open loop, or closed loop for CLOSED_LOOP problems)."""
    r = evaluate(planner, problem, test, optimum)
    loop = "closed" if problem.name in CLOSED_LOOP else "open"
    return {"loop": loop, "success": r[f"{loop}_success"], "cost_over_optimum": r[f"{loop}_cost_over_optimum"]}


def halting_row(model, problem, test: dict, optimum: np.ndarray) -> dict:
    """The halting model's plans for ``problem``: success, cost over the optimum, mean iterations, and the
    mean iterations its training targets ask for (the first iterate no later one beats by more than the
    tolerance, from a run of all ``K_max``): the head's order against the planner's own."""
    x0 = torch.as_tensor(test["initial_states"], dtype=torch.float64)
    U, info = model.plan(x0, problem=problem.name, return_info=True)
    ev = problem.evaluate(x0, U.to(torch.float64))
    costs = RefinementEvaluator(model.planner(problem.name), problem).evaluate(test, iterations=model.num_iterations).costs
    wanted = first_halt(stop_targets(torch.as_tensor(costs, dtype=torch.float64), DEFAULT_TOLERANCE))
    return {"success": 100 * ev["success"].double().mean().item(),
            "cost_over_optimum": ev["cost"].double().mean().item() / optimum.mean(),
            "iterations": info["iterations"].double().mean().item(),
            "target_iterations": wanted.double().mean().item()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default=PROBLEMS)
    ap.add_argument("--runs", default="runs/multi_problem", help="folder of the trained models (reused)")
    ap.add_argument("--train_samples", type=int, default=1000)
    ap.add_argument("--test_samples", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: trc train's)")
    ap.add_argument("--act_epochs", type=int, default=20, help="epochs of the halting fine-tuning")
    ap.add_argument("--closed_loop_steps", type=int, default=None,
                    help="override the recipes' closed-loop tuning steps (quick checks)")
    ap.add_argument("--no_single", action="store_true", help="skip the single-problem models")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", default="data/benchmark_cache")
    ap.add_argument("--output", default=None, help="write every result as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.problems.split(",")
    problems = [get_problem(n) for n in names]
    cache, runs = Path(args.cache), Path(args.runs)
    cache.mkdir(parents=True, exist_ok=True)
    paths, tests = [], {}
    for p in problems:
        path = cache / f"{p.name}_lqr_{args.train_samples}.npz"
        cached(path, lambda p=p: generate_dataset(p, args.train_samples, "lqr", seed=0))
        paths.append(str(path))
        tests[p.name] = test_set(p, args.test_samples, cache)
    data = ",".join(paths)
    print(f"{', '.join(names)}: {args.train_samples} LQR demonstrations and {args.test_samples} test states each, "
          f"{torch.get_num_threads()} thread(s)", flush=True)
    results = {}

    tuning = [] if args.closed_loop_steps is None else ["--closed_loop_steps", str(args.closed_loop_steps)]
    multi_path, wall, cpu = trained(runs / "multi", data, args.problems, tuning, args.epochs, args.seed)
    multi = load_checkpoint(multi_path)
    print(f"multi: {multi.get_parameter_count()['total']} parameters, {took(wall, cpu)}", flush=True)
    results["multi"] = {"train_wall_s": wall, "train_cpu_s": cpu, "parameters": multi.get_parameter_count()["total"]}
    for p in problems:
        r = row(multi.planner(p.name), p, *tests[p.name])
        results["multi"][p.name] = r
        print(f"  {p.name:22s} {r['loop']:6s} loop: success {r['success']:6.2f} %, cost/opt "
              f"{r['cost_over_optimum']:.4f}", flush=True)

    act_path, wall, _ = trained(runs / "multi_act", data, args.problems,
                             ["--act", "--heads_only", "--init_from", str(multi_path)], args.act_epochs, args.seed)
    act = load_checkpoint(act_path)
    print(f"multi_act (halting, K_max {act.num_iterations}, fine-tuned {args.act_epochs} epochs, {took(wall)}), "
          f"open loop with halting:", flush=True)
    results["multi_act"] = {"train_wall_s": wall}
    for p in problems:
        r = halting_row(act, p, *tests[p.name])
        results["multi_act"][p.name] = r
        print(f"  {p.name:22s} success {r['success']:6.2f} %, cost/opt {r['cost_over_optimum']:.4f}, "
              f"mean iterations {r['iterations']:.2f} (its targets ask for {r['target_iterations']:.2f})", flush=True)

    for p in [] if args.no_single else problems:
        path, wall, _ = trained(runs / f"single_{p.name}", str(paths[names.index(p.name)]), p.name, tuning, args.epochs,
                             args.seed)
        single = load_checkpoint(path)
        r = row(single, p, *tests[p.name])
        r.update(train_wall_s=wall, parameters=single.get_parameter_count()["total"])
        results[f"single_{p.name}"] = r
        print(f"single {p.name:15s} ({r['parameters']} parameters, {took(wall)}) {r['loop']:6s} loop: success "
              f"{r['success']:6.2f} %, cost/opt {r['cost_over_optimum']:.4f}", flush=True)
    if args.output:
        text = json.dumps(results, indent=1)
        atomic_write(args.output, lambda tmp: Path(tmp).write_text(text))


if __name__ == "__main__":
    main()
