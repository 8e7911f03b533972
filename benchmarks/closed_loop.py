"""Closed loop: its speed, and how the teacher and a model fare open and closed loop.

1. Speed: ``trc.evaluation.closed_loop`` with the default ``trc train`` model
   (weights do not matter for timing) on ``--starts`` starts x T steps,
   replanning every step (T plans).  The issue asks for 1000 starts x 100 steps.
2. The LQR teacher as a planner (``--lqr``): its open-loop plan, and replanned
   from every state (receding horizon), against the open-loop optimum.
3. A checkpoint (``--checkpoint``): open loop and closed loop against the optimum, and where
   in the episode the closed loop's excess cost lies (stage costs summed over fifths of the
   horizon, and the terminal cost, against the optimum's).
4. The optimum as the planner (``--oracle``): re-solved from every state the closed loop
   reaches (receding horizon, warm-started from its last plan shifted by a step): what
   replanning a full horizon from every state costs by itself, before any learning.
5. One step of policy improvement by rollouts on a checkpoint (``--lookahead``): at every step
   the model's control and the constant controls ``-u_max``, 0 and ``u_max`` are each applied
   for one step, the model's own closed loop runs on from each to the end, and the cheapest
   is kept.  Never worse than the model's closed loop (its own control is a candidate); what
   it gains is what better single decisions, judged by the model's own closed loop, buy.

Figures 2 to 4 need the optimum of every start (``trc.data.experts.optimal_controls``,
a few seconds per hundred starts).  Wall times are inflated by other work on the
machine; the CPU time (one thread) is printed beside them.

    python benchmarks/closed_loop.py --problem pendulum --starts 1000 --time
    python benchmarks/closed_loop.py --problem pendulum --starts 200 --lqr
    python benchmarks/closed_loop.py --checkpoint outputs/vdp/best_model.pt --starts 500
    python benchmarks/closed_loop.py --problem pendulum --starts 100 --oracle
    python benchmarks/closed_loop.py --checkpoint outputs/pendulum/best_model.pt --starts 200 --lookahead

Measured (pendulum, held-out starts of seed 123, one thread):

* ``--oracle``, 100 starts: the optimum replanned from every state realises its own open-loop
  cost, 1.0000x (median and 99th percentile of the per-start ratio 1.0000, max 1.0001; 158 s).
  Replanning a full horizon from every state costs nothing by itself: the pendulum's closed-loop
  excess (``benchmarks/beyond_teacher.py``) is the learned planner's.
* ``--checkpoint`` with chapter 10's self-play model (seed 0), 500 starts: closed loop 95.8 %,
  1.119x.  Its stage costs by stretch of the episode, against the optimum's: steps 0-20
  69.8 (73.1), 20-40 44.4 (44.1), 40-60 26.1 (21.7), 60-80 13.0 (1.9), 80-100 3.0 (0.0), terminal
  1.2 (0.0).  The planner pumps as fast as the optimum, a little greedily at first, and loses
  the time at the catch: from step 40 on, where the optimum is nearly up, it still swings.
* ``--lookahead``, 200 starts: chapter 10's model (seed 0) from 96.5 % at 1.118x to 100.0 % at
  1.074x; the recipe's seed 1 from 99.0 % at 1.092x to 100.0 % at 1.065x (93 s for the 200,
  against 1.2 s for the closed loop).  The steps where it gains are the catch's (steps 60-80:
  12.0 to 7.2 and 10.7 to 6.1, the optimum's 1.7); over the first 20 steps it gives up the
  greedy start (68.3 to 71.8, the optimum's 71.9).  Better single decisions, judged by the
  model's own closed loop, would remove every failure and a third of the excess (37 and 29 %):
  targets for training (approximate policy iteration), not a controller, at 80 times the cost.  The
  continuation keeps the angle the loop showed last; started afresh, it wraps a swing through
  ±π to the other side, and the "improvement" lost (1.118x to 1.179x).
"""

from __future__ import annotations

import argparse
import time

import torch

import trc
from trc.data.experts import lqr_controls, optimal_controls
from trc.evaluation import closed_loop
from trc.evaluation.closed_loop import Controller
from trc.training.train import DEFAULTS, build_model


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def row(name: str, success, cost, opt_cost) -> str:
    return (f"{name:34s} success {100 * success.double().mean().item():5.1f} %   "
            f"mean cost {cost.mean().item():9.3f}   cost / optimum {(cost.mean() / opt_cost.mean()).item():7.4f}")


def by_phase(problem, X, U, X_ref, U_ref, parts: int = 5) -> str:
    """Mean stage cost over each of ``parts`` stretches of the horizon and the mean terminal
    cost, of ``(X, U)`` against ``(X_ref, U_ref)``."""
    tgt = problem.target_like(X[:, 0])[:, None]
    stage = problem.stage_cost(X[:, :-1], U, tgt)                   # [B, T]
    stage_ref = problem.stage_cost(X_ref[:, :-1], U_ref, tgt)
    T = stage.shape[1]
    edges = [round(i * T / parts) for i in range(parts + 1)]
    cells = [f"{a}-{b}: {stage[:, a:b].sum(1).mean():.2f} ({stage_ref[:, a:b].sum(1).mean():.2f})"
             for a, b in zip(edges, edges[1:])]
    final = problem.terminal_cost(X[:, -1], tgt[:, 0]).mean(), problem.terminal_cost(X_ref[:, -1], tgt[:, 0]).mean()
    return "  steps " + ", ".join(cells) + f"; terminal {final[0]:.2f} ({final[1]:.2f})"


class OptimumReplanner:
    """The optimum as a planner: ``optimal_controls`` from every state it is given, with its last
    plan shifted by the ``replan_every`` steps since (the last control repeated) as one more initial guess."""

    def __init__(self, problem, replan_every: int = 1):
        self.problem, self.shift, self.last = problem, replan_every, None

    def __call__(self, x, target):
        k = self.shift
        guess = None if self.last is None else torch.cat([self.last[:, k:], self.last[:, -1:].expand(-1, k, -1)], 1)
        self.last = optimal_controls(self.problem, x, target, guesses=guess)
        return self.last


@torch.no_grad()
def lookahead(model, problem, x0):
    """The closed loop of one step of policy improvement over ``model`` (module docstring, 5):
    ``(X [B, T+1, n_x], U [B, T, n_u])``."""
    T, tgt = problem.horizon, problem.target_like(x0)

    def to_go(x, t, shown):   # the model's closed loop from x at step t: its stage costs and the terminal cost
        controller, total = Controller(model, problem=problem), 0.0
        controller._shown = shown   # the angle the loop showed last: it goes on as the loop itself would
        for _ in range(t, T):
            u = controller(x)
            total = total + problem.stage_cost(x, u, problem.target_like(x))
            x = problem.step(x, u)
        return total + problem.terminal_cost(x, problem.target_like(x))

    controller, x, X, U = Controller(model, problem=problem), x0, [x0], []
    for t in range(T):
        own = controller(x)
        candidates = torch.stack([own] + [torch.full_like(own, c * problem.u_max) for c in (-1.0, 0.0, 1.0)])
        C, B = candidates.shape[:2]
        xs, us = x.repeat(C, 1), candidates.flatten(0, 1)
        cost = (problem.stage_cost(xs, us, tgt.repeat(C, 1))
                + to_go(problem.step(xs, us), t + 1, controller._shown.repeat(C, 1)))
        u = candidates[cost.view(C, B).argmin(0), torch.arange(B)]
        x = problem.step(x, u)
        X.append(x)
        U.append(u)
    return torch.stack(X, 1), torch.stack(U, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problem", default="pendulum")
    ap.add_argument("--starts", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=123, help="seed of the held-out starts")
    ap.add_argument("--time", action="store_true", help="time the closed loop of the default model")
    ap.add_argument("--lqr", action="store_true", help="the LQR teacher open and closed loop")
    ap.add_argument("--checkpoint", help="a trained model, open and closed loop")
    ap.add_argument("--oracle", action="store_true", help="the optimum replanned from every state")
    ap.add_argument("--lookahead", action="store_true",
                    help="with --checkpoint: one step of policy improvement by the model's own closed loop")
    ap.add_argument("--replan_every", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(1)
    problem = trc.get_problem(args.problem)
    if args.checkpoint:
        model = trc.load_checkpoint(args.checkpoint)
        problem = model.problem
    if args.lookahead and (not args.checkpoint or problem.u_max is None):
        ap.error("--lookahead needs --checkpoint, of a problem with a bound on the control "
                 "(its candidates are -u_max, 0, u_max)")
    x0 = problem.sample_initial_states(args.starts, torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    print(f"{problem.name}: {args.starts} held-out starts (seed {args.seed}), T = {problem.horizon}, "
          f"replan every {args.replan_every}")

    if args.time:
        model = build_model(problem, iterations=DEFAULTS["iterations"])
        res, wall, cpu = timed(lambda: closed_loop(model, x0, args.replan_every, problem=problem))
        print(f"closed loop of the default model ({sum(p.numel() for p in model.parameters())} parameters, "
              f"K = {model.num_iterations}): {res.plans} plans of {args.starts} starts in {wall:.1f} s wall, "
              f"{cpu:.1f} s CPU ({1e3 * wall / res.plans:.0f} ms a plan)")
    if not (args.lqr or args.checkpoint or args.oracle):
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
        print(f"  closed loop: {wall:.1f} s wall, {cpu:.1f} s CPU; its cost by stretch of the episode "
              f"(the optimum's):")
        print(by_phase(problem, res.X, res.U, opt["X"], U_opt))
        if args.lookahead:
            (X, U), wall, cpu = timed(lambda: lookahead(model, problem, x0))
            ev = problem.evaluate(x0, U)
            print(row("model + one-step lookahead", problem.success(X), problem.cost(X, U), opt["cost"]))
            print(f"  its open-loop replay agrees: {torch.allclose(ev['cost'], problem.cost(X, U))}; "
                  f"{wall:.0f} s wall, {cpu:.0f} s CPU; by stretch of the episode:")
            print(by_phase(problem, X, U, opt["X"], U_opt))
    if args.oracle:
        res, wall, cpu = timed(lambda: closed_loop(OptimumReplanner(problem, args.replan_every), x0, args.replan_every,
                                                   problem=problem))
        print(row("optimum, closed loop", res.success, res.cost, opt["cost"]))
        ratio = res.cost / opt["cost"]
        print(f"  per start, cost / optimum: median {ratio.median():.4f}, 99th percentile "
              f"{ratio.quantile(0.99):.4f}, max {ratio.max():.4f}; {wall:.0f} s wall, {cpu:.0f} s CPU")


if __name__ == "__main__":
    main()
