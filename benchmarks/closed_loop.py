"""Closed loop: its speed, and how the teacher and a model fare open and closed loop.

1. Speed: ``trc.evaluation.closed_loop`` with the default ``trc train`` model
   (weights do not matter for timing) on ``--starts`` starts x T steps,
   replanning every step (T plans).  The issue asks for 1000 starts x 100 steps.
2. The LQR teacher as a planner (``--lqr``): its open-loop plan, and replanned
   from every state (receding horizon), against the open-loop optimum.
3. A checkpoint (``--checkpoint``): open loop and closed loop against the optimum.

Figures 2 and 3 need the optimum of every start (``trc.data.experts.optimal_controls``,
a few seconds per hundred starts).  Wall times are inflated by other work on the
machine; the CPU time (one thread) is printed beside them.

    python benchmarks/closed_loop.py --problem pendulum --starts 1000 --time
    python benchmarks/closed_loop.py --problem pendulum --starts 200 --lqr
    python benchmarks/closed_loop.py --checkpoint outputs/vdp/best_model.pt --starts 500
"""

from __future__ import annotations

import argparse
import time

import torch

import trc
from trc.data.experts import lqr_controls, optimal_controls
from trc.evaluation import closed_loop
from trc.training.train import build_model


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def row(name: str, success, cost, opt_cost) -> str:
    return (f"{name:34s} success {100 * success.double().mean().item():5.1f} %   "
            f"mean cost {cost.mean().item():9.3f}   cost / optimum {(cost.mean() / opt_cost.mean()).item():7.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="pendulum")
    ap.add_argument("--starts", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=123, help="seed of the held-out starts")
    ap.add_argument("--time", action="store_true", help="time the closed loop of the default model")
    ap.add_argument("--lqr", action="store_true", help="the LQR teacher open and closed loop")
    ap.add_argument("--checkpoint", help="a trained model, open and closed loop")
    ap.add_argument("--replan_every", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem = trc.get_problem(args.problem)
    if args.checkpoint:
        model = trc.load_checkpoint(args.checkpoint)
        problem = model.problem
    x0 = problem.sample_initial_states(args.starts, torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    print(f"{problem.name}: {args.starts} held-out starts (seed {args.seed}), T = {problem.horizon}, "
          f"replan every {args.replan_every}")

    if args.time:
        model = build_model(problem)
        res, wall, cpu = timed(lambda: closed_loop(model, x0, args.replan_every, problem=problem))
        print(f"closed loop of the default model ({sum(p.numel() for p in model.parameters())} parameters, "
              f"K = {model.num_iterations}): {res.plans} plans of {args.starts} starts in {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU ({1e3 * wall / res.plans:.0f} ms a plan)")
    if not (args.lqr or args.checkpoint):
        return

    U_opt, wall, cpu = timed(lambda: optimal_controls(problem, x0))
    opt = problem.evaluate(x0, U_opt)
    print(f"optimum: {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(row("optimum (open loop)", opt["success"], opt["cost"], opt["cost"]))
    if args.lqr:
        ol = problem.evaluate(x0, lqr_controls(problem, x0))
        print(row("LQR teacher, open loop", ol["success"], ol["cost"], opt["cost"]))
        res, wall, _ = timed(lambda: closed_loop(lambda x, t: lqr_controls(problem, x, t), x0,
                                                 args.replan_every, problem=problem))
        print(row("LQR teacher, closed loop", res.success, res.cost, opt["cost"]))
    if args.checkpoint:
        with torch.no_grad():
            U = model(x0.float()).controls.double()
        ol = problem.evaluate(x0, U)
        print(row("model, open loop", ol["success"], ol["cost"], opt["cost"]))
        res, wall, cpu = timed(lambda: closed_loop(model, x0, args.replan_every))
        print(row("model, closed loop", res.success, res.cost, opt["cost"]))
        print(f"  closed loop: {wall:.1f} s wall, {cpu:.1f} s CPU")


if __name__ == "__main__":
    main()
