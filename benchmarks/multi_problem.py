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
    python benchmarks/multi_problem.py --epochs 2 --act_epochs 1 --test_samples 50 --runs /tmp/m   # smoke test

Targets (multi-problem model, held-out starts vs the optimum): double_integrator >= 99 % and
<= 1.01x; vanderpol >= 99.5 % and <= 1.01x; vanderpol_constrained >= 75 % and <= 1.03x;
pendulum (closed loop) >= 93 % and <= 1.07x; halting model's mean iterations
double_integrator < vanderpol < pendulum; the multi-problem training <= 20 min on a 2-core CPU.

Measured (defaults: 300 epochs at lr 1e-3, the 'log' balance; 1 thread on a 2-core machine whose
other core ran other jobs):

=====================  ====================  ===================  ====================================
problem                multi, seed 0         single (its recipe)  multi + halting head (K_max 8): it.
                       (seed 1; seed 2)                           used (its targets ask for), seeds
                                                                  0; 1; 2
=====================  ====================  ===================  ====================================
double_integrator      100.0 %, 1.0030x      100.0 %, 1.0008x     2.75 (2.88); 2.25 (2.96);
                       (99.9 %, 1.0030x;                          2.94 (2.78)
                       100.0 %, 1.0036x)
vanderpol              100.0 %, 1.0071x      99.9 %, 1.0058x      1.71 (2.40); 1.47 (2.52);
                       (100.0 %, 1.0076x;                         2.29 (2.78)
                       100.0 %, 1.0084x)
vanderpol_constrained  77.8 %, 1.0078x       80.3 %, 1.0063x      2.53 (3.10); 2.12 (2.96);
                       (77.1 %, 1.0083x;                          3.02 (3.73)
                       77.4 %, 1.0123x)
pendulum (closed)      0.0 %, 5.44x          70.5 %, 1.81x        4.58 (5.02); 4.52 (4.09);
                       (0.0 %, 5.44x;                             5.74 (5.76)
                       0.0 %, 5.43x)
=====================  ====================  ===================  ====================================

The multi-problem model (92,296 parameters; the single ones 92,040, the double integrator's
59,230) trained in 930 s (seed 1: 815 s; seed 2: 786 s beside another run), its halting head in
188 s; the single models in 38, 93, 28 and 477 s.  Met with all three seeds: the double
integrator, Van der Pol and constrained Van der Pol (success and cost) and the training time.
Missed: the pendulum, which the shared model does not swing up in closed loop (it keeps the
problem-free settings, ``SINGLE_PROBLEM_ONLY`` in ``trc/training/recipe.py``: the pendulum's own
recipe, which brought its single model to 70.5 % when this was measured (before the recipe's
closed-loop tuning, which takes it to 96.3 %: ``benchmarks/beyond_teacher.py``), would add about
2.5x that model's training time to the shared run, past the 20-minute budget), and the order of
the iterations: the pendulum takes the most, but the double integrator takes more than Van der
Pol.  That order is the planner's, not a fault of the head: the targets the head learns ask for it
too on seeds 0 and 1, and as many on seed 2 (in parentheses, from a run of all 8 iterations on the
same starts).  This planner keeps lowering the double integrator's cost a little up to the last
iterations (mean 61.35 after the first, 61.19 after the seventh), so more of its starts still gain
more than the 0.1 % tolerance late in the run; its Van der Pol plans are cheapest after the third
iteration and then drift up (mean 380.1, 379.2, 379.1, 379.4, ...).

What the pendulum's own recipe does inside the shared model (seed 0, tried with the problem-free
values of ``SINGLE_PROBLEM_ONLY`` replaced by the pendulum's own: imitation of its archive alone,
the wider exploration, stitching and neighbours; 826 s of CPU): the pendulum swings up in closed
loop from 57.1 % of the starts at 2.80x, but the shared network gives the others up: double
integrator 98.8 %, 1.0124x; Van der Pol 99.9 %, 1.0129x; constrained Van der Pol 56.3 %, 1.0132x.
Then 200 steps of closed-loop tuning of its pendulum planner (``trc.training.closed_loop_tuning``),
with the other problems' training objectives added at every step to hold them (their ``log L_p``,
as in training): pendulum 65.7 %, 2.38x, but 96.2 %, 96.7 % and 36.6 % on the others (1.017x,
1.020x, 1.023x); the others' gradients were clipped to norm 1 together with the closed loop's
(clipping them apart, or weighting them up, is untried).  Tuned so from the default shared model
(seed 2, the pendulum's planner alone, 300 steps planning every 4, 142 s), the pendulum reaches
6.7 % of its validation starts at best (6.0 %, 5.12x on the test starts) and the shared network
loses the others (double integrator 0.0 %, Van der Pol 54.8 %, constrained 11.8 %): the tuning
needs a planner that already swings up.  The run above had one process weight
for all the problems (multi-problem training took one), the pendulum's 0; with each problem's
own (the pendulum's whole recipe, the others keeping theirs and the process term, seed 0, 916 s,
code not kept): pendulum 65.8 %, 1.83x in closed loop, but
double integrator 98.9 %, 1.0078x; Van der Pol 99.9 %, 1.0107x; constrained Van der Pol 65.7 %,
1.0114x.  It is not that the pendulum takes more of the shared optimizer's steps: self-play draws
an epoch's batches from its archive, as many as the demonstrations make, for every problem (a
run that capped each problem's batches at the others' most trained the very same model).  What
goes with it is the pendulum's process weight 0 (seed 0, code not kept): its self-play settings
with the process term kept (weight 1) hold the others (99.9 %, 1.0053x; 100.0 %, 1.0091x; 76.5 %,
1.0082x; 932 s) but leave the pendulum at 0.9 %, 4.50x; weight 0 with the problem-free self-play
settings gives the others up as before (99.8 %, 1.0053x; 99.2 %, 1.0129x; 58.9 %, 1.0131x; 391 s)
for a pendulum at 8.9 %.  Nor is it the 'log' balance's pull on a small imitation loss: with the
whole recipe and the pendulum's loss taken as it is (no log) the others fell further (95.6 %,
1.0225x; 99.8 %, 1.0178x; 48.9 %, 1.0202x; pendulum 63.3 %, 2.16x), with log(L + 0.1) about as
with the log (98.6 %, 1.0076x; 100.0 %, 1.0102x; 63.8 %, 1.0102x; pendulum 65.4 %, 2.05x).  Nor
is it the network's size: the ``medium`` preset (348,616 parameters) with the whole recipe gave
99.8 %, 1.0048x; 100.0 %, 1.0104x; 58.7 %, 1.0083x and the pendulum 63.3 %, 2.22x, in 1240 s.
With the default recipe the same preset beat the small one on the other three with seed 0 in
about the same time (100.0 %, 1.0020x; 100.0 %, 1.0055x; 80.9 %, 1.0039x; pendulum 0.0 %, 5.43x;
945 s; the step is bound by the number of operations, not their size), and its halting head kept
the order asked for (1.41 < 1.45 < 2.92 iterations, though its targets asked for 2.34, 2.22 and
3.95); but not steadily: seed 1 gave 100.0 %, 1.0024x; 99.6 %, 1.0065x; 78.3 %, 1.0060x (halting
2.00 > 1.42), and seed 2 missed three rows (98.3 %, 1.0043x; 100.0 %, 1.0123x; 68.1 %, 1.0145x;
halting 1.12 > 1.07; 1025-1031 s, two runs at a time) where the small preset met them all with
every seed, so the small preset stays the default for several problems too.  None of the others
is the default either: three met rows are worth more than a pendulum still far from 93 %.

Earlier defaults (seed 0 unless said): 250 epochs with ``log`` reached 100.0 %, 99.7 %, 74.7 %
and 0.0 % at 1.0033x, 1.0086x, 1.0107x and 5.43x (seed 1: 99.8 %, 100.0 %, 71.9 %, 0.0 %), the
constrained problem short of 75 % with both seeds, while its halting head took 1.75, 2.26, 2.81
and 4.55 iterations, in the order asked for.  With the plain sum of the losses (``none``) 250
epochs reached 100.0 %, 98.6 %, 61.3 % and 0.0 % at 1.0027x, 1.0226x, 1.0286x and 5.41x (seed
1: 99.9 %, 99.8 %, 66.8 %); 120 epochs at the single-problem lr 3e-3 reached 99.7 %, 95.3 %,
45.2 % and 0.2 %; 120 epochs at 1e-3 reached 99.8 %, 96.9 % and 51.6 % (``log``: 99.9 %, 98.3 %
and 66.4 %).
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

    multi_path, wall, cpu = trained(runs / "multi", data, args.problems, [], args.epochs, args.seed)
    multi = load_checkpoint(multi_path)
    print(f"multi: {multi.get_parameter_count()['total']} parameters, trained in {wall:.0f} s "
          f"({wall / 60:.1f} min; CPU {cpu:.0f} s)", flush=True)
    results["multi"] = {"train_wall_s": wall, "train_cpu_s": cpu, "parameters": multi.get_parameter_count()["total"]}
    for p in problems:
        r = row(multi.planner(p.name), p, *tests[p.name])
        results["multi"][p.name] = r
        print(f"  {p.name:22s} {r['loop']:6s} loop: success {r['success']:6.2f} %, cost/opt "
              f"{r['cost_over_optimum']:.4f}", flush=True)

    act_path, wall, _ = trained(runs / "multi_act", data, args.problems,
                             ["--act", "--heads_only", "--init_from", str(multi_path)], args.act_epochs, args.seed)
    act = load_checkpoint(act_path)
    print(f"multi_act (halting, K_max {act.num_iterations}, fine-tuned {args.act_epochs} epochs in {wall:.0f} s), "
          f"open loop with halting:", flush=True)
    results["multi_act"] = {"train_wall_s": wall}
    for p in problems:
        r = halting_row(act, p, *tests[p.name])
        results["multi_act"][p.name] = r
        print(f"  {p.name:22s} success {r['success']:6.2f} %, cost/opt {r['cost_over_optimum']:.4f}, "
              f"mean iterations {r['iterations']:.2f} (its targets ask for {r['target_iterations']:.2f})", flush=True)

    for p in [] if args.no_single else problems:
        path, wall, _ = trained(runs / f"single_{p.name}", str(paths[names.index(p.name)]), p.name, [], args.epochs,
                             args.seed)
        single = load_checkpoint(path)
        r = row(single, p, *tests[p.name])
        r.update(train_wall_s=wall, parameters=single.get_parameter_count()["total"])
        results[f"single_{p.name}"] = r
        print(f"single {p.name:15s} ({r['parameters']} parameters, {wall:.0f} s) {r['loop']:6s} loop: success "
              f"{r['success']:6.2f} %, cost/opt {r['cost_over_optimum']:.4f}", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
