"""How well closed-loop tuning's validation picks its state, and how good the best state is.

The pendulum's recipe tunes the last epoch in closed loop and keeps the validated state
(every ``eval_every`` steps) that is cheapest on the validation starts
(:mod:`trc.training.closed_loop_tuning`).  Its validation swings widely, so this script asks
whether a better pick could reach the issue's 1.05x.  For each seed it trains the recipe's epochs
(``trc train`` with ``--closed_loop_steps 0 --val_closed_loop 0``: the recipe up to its tuning,
cached in ``--runs``), tunes the last epoch with the recipe's settings (the same call ``trc train``
makes, so the state kept is the recipe's), and judges every validated state in closed loop
(replanning every step) on the benchmark's test starts (``--test_samples``, seed 12345, against
the optimum) and on ``--fresh`` further starts from the start box (seed 777):

* the state the recipe keeps, and its test figures (the recipe's own result);
* the state ``--fresh`` starts would keep (a larger validation);
* the best state on the test starts themselves: an oracle pick, not a legal one, and a bound on
  what any rule choosing among these states could reach.

    python benchmarks/tuning_selection.py --seeds 0,1
    python benchmarks/tuning_selection.py --seeds 0 --epochs 1 --steps 4 --train_samples 100 \\
        --test_samples 20 --fresh 20 --runs /tmp/ts          # smoke test

Measured (pendulum, seeds 0 and 1, 600 tuning steps, 25 validated states each, one thread):

====  =========================  ==========================  ==========================
seed  recipe's pick (test)       3000 fresh starts' pick      best state on the test
====  =========================  ==========================  ==========================
0     step 150: 95.5 %, 1.1183x  step 175: 96.7 %, 1.0971x    step 600: 97.5 %, 1.0918x
1     step 350: 98.9 %, 1.0786x  step 350: 98.9 %, 1.0786x    step 350: 98.9 %, 1.0786x
====  =========================  ==========================  ==========================

No state the tuning passes through is near 1.05x: a larger validation buys about 0.02x on seed 0
and nothing on seed 1, so the pendulum's excess is the planner's, not the selection's.  The swings
are real (seed 0's states at steps 275, 350 and 425 score 70-83 % at 1.75-1.85x on the test starts
too).  An exponential average of the weights (decay 0.98, validated and kept in their place; an
experiment not kept in this script) smoothed seed 0's validation (no state above 163 where the raw
weights reached 261) but kept 95.9 % at 1.1463x.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from beyond_teacher import train  # noqa: E402
from vanderpol import cached, test_set  # noqa: E402

from trc import get_problem  # noqa: E402
from trc.data.datasets import generate_dataset, load_dataset, split_dataset  # noqa: E402
from trc.evaluation.closed_loop import closed_loop  # noqa: E402
from trc.models.checkpoint import load_checkpoint  # noqa: E402
from trc.training.closed_loop_tuning import ClosedLoopTuning, tune_closed_loop  # noqa: E402
from trc.training.recipe import recipe  # noqa: E402

PROBLEM = "pendulum"


def tuned_states(run: Path, data: dict, steps: int | None) -> tuple[torch.nn.Module, dict, dict]:
    """The model of ``run/last_model.pt``, every validated state of the recipe's tuning of it (step 0:
    untuned) and the validation cost of each."""
    model = load_checkpoint(run / "last_model.pt")
    settings = model.checkpoint_metadata["settings"]
    _, val = split_dataset(data, settings["val_fraction"], settings["seed"])
    own = recipe(PROBLEM)
    config = ClosedLoopTuning(steps=steps or own["closed_loop_steps"], replan_every=own["closed_loop_replan"],
                              truncate=own["closed_loop_truncate"], critic=own["closed_loop_critic"])
    states = {0: copy.deepcopy(model.state_dict())}
    model, log = tune_closed_loop(model, torch.as_tensor(val["initial_states"], dtype=torch.float64), config,
                              seed=settings["seed"], val_target=torch.as_tensor(val["target_states"], dtype=torch.float64),
                              save=lambda s: states.__setitem__(s["step"], copy.deepcopy(s["weights"])))
    return model, states, {r["step"]: r["cost"] for r in log if "cost" in r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds")
    ap.add_argument("--train_samples", type=int, default=1000)
    ap.add_argument("--test_samples", type=int, default=1000)
    ap.add_argument("--fresh", type=int, default=3000, help="further starts that judge every state")
    ap.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs (quick checks)")
    ap.add_argument("--steps", type=int, default=None, help="override the recipe's tuning steps (quick checks)")
    ap.add_argument("--cache", default="data/benchmark_cache")
    ap.add_argument("--runs", default="runs/tuning_selection")
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem = get_problem(PROBLEM)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    data_path = cache / f"{PROBLEM}_lqr_{args.train_samples}.npz"
    data = cached(data_path, lambda: generate_dataset(problem, args.train_samples, "lqr", seed=0))
    test, optimal = test_set(problem, args.test_samples, cache)
    x_test = torch.as_tensor(test["initial_states"], dtype=torch.float64)
    x_fresh = problem.sample_initial_states(args.fresh, torch.Generator().manual_seed(777), dtype=torch.float64)
    for seed in map(int, args.seeds.split(",")):
        run = Path(args.runs) / f"s{seed}"
        if not (run / "last_model.pt").exists():
            train(data_path, PROBLEM, ["--closed_loop_steps", "0", "--val_closed_loop", "0"], seed, args.epochs, run)
        model, states, val = tuned_states(run, data, args.steps)
        rows = []
        for step in sorted(states):
            model.load_state_dict(states[step])
            model.eval()
            t, f = closed_loop(model, x_test, replan_every=1), closed_loop(model, x_fresh, replan_every=1)
            rows.append({"step": step, "val": val[step], "fresh": f.cost.double().mean().item(),
                         "success": 100 * t.success.double().mean().item(),
                         "cost": t.cost.double().mean().item() / optimal.mean()})
            print(f"seed {seed} step {step:4d}: validation {val[step]:8.2f}, {args.fresh} fresh {rows[-1]['fresh']:8.2f} | "
                  f"test {rows[-1]['success']:5.1f} %, {rows[-1]['cost']:.4f}x", flush=True)
        for name, key in (("recipe's pick", "val"), (f"{args.fresh} fresh starts' pick", "fresh"),
                          ("best on the test starts", "cost")):
            r = min(rows, key=lambda r: r[key])   # the earliest of equals, as the tuning keeps
            print(f"seed {seed}, {name:28s} step {r['step']:4d}: {r['success']:5.1f} %, {r['cost']:.4f}x", flush=True)


if __name__ == "__main__":
    main()
