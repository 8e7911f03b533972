"""Experts benchmark: LQR speed, and the optimal expert's speed and accuracy.

Prints, per problem: the time of 10,000 clipped-LQR demonstrations, the time
of the optimal expert on 1000 instances, mean-cost ratios LQR/optimal and
optimal/reference, and success rates.  The reference is independent of trc's
solver: CasADi + IPOPT (exact Hessian, multiple shooting) and SciPy's L-BFGS-B,
per instance, each from several starts (LQR, zero, +-u_max, the problem's own
warm starts such as the pendulum's swing-up, two random), on a subset; the
"best known" cost of an instance is the lowest any method found.  On the
pendulum the optimal expert must reach >= 97 % success and a mean cost within
1 % of IPOPT's:
``python benchmarks/experts.py --problems pendulum --num_opt 200 --num_ref 200 --reference ipopt``.

Needs ``casadi`` and ``scipy`` (``pip install casadi scipy``); neither is a
dependency of trc.  Run: ``python benchmarks/experts.py [--num_ref 50]``.

Measured (the pendulum command above, CasADi 3.8.2, one thread): the optimal expert swings up
99.0 % of the 200 starts (LQR 10.0 %) in 4.7 s for all 200, never above LQR's cost and within the
bound; its mean cost is 0.19 % above IPOPT's best of 7 starts per instance (18.9 ms a solve), above
it by more than 0.1 % on 4 instances, and IPOPT is never more than 0.1 % above it.  Targets
(>= 97 %, within 1 % of IPOPT's): met.

``--warm_start`` reports instead how much trc's plan helps IPOPT: on each problem of
:data:`WARM_START_PROBLEMS`, IPOPT started from trc's plan, from clipped LQR and from zeros
(iterations, wall time, whether it reaches the best optimum any start found), and trc's own time
per start at batch 1 and 1024 against IPOPT's.  The model is ``--checkpoint PROBLEM=PATH``, or
what ``trc train`` gives with no other flag, trained here (``--warm_epochs`` overrides the recipe's
epochs; up to ten minutes on one CPU thread for the pendulum, cached in ``--cache_dir``):
``python benchmarks/experts.py --warm_start [--warm_problems vanderpol]``.

Measured (``--warm_start``, 50 new start states per problem, IPOPT's default options, tolerance
1e-8, single shooting; trc's model is ``trc train`` with no other flag, trained here: Van der Pol
250 epochs in 99 s, constrained Van der Pol 200 epochs in 112 s, pendulum 100 epochs of self-play
and 600 steps of closed-loop tuning in 502 s; re-run on a later day, the two Van der Pol rows gave
every figure again, the models trained in 86 and 95 s).
``trc`` starts IPOPT from the open-loop plan, ``trc_cl`` from the controls trc applies when it
replans at every step (``trc.evaluation.closed_loop``):

=====================  ==========================================  =================================
problem                mean IPOPT iterations: trc / trc_cl / LQR    at the best optimum found, mean
                       / zeros                                      final cost (trc_cl, LQR, zeros)
=====================  ==========================================  =================================
vanderpol              10.0 / 9.8 / 10.2 / 19.4                     100 % each, 374.7
vanderpol_constrained  10.2 / 10.7 / 16.7 / 18.2                    100 % each, 1372.7
pendulum               161.8 / 377.2 / 102.7 / 73.5                 30 / 96 / 12 / 8 %; 212.8, 316.4,
                                                                    333.8 (trc's plan 283.3)
=====================  ==========================================  =================================

* Van der Pol: 1.8 % fewer iterations than from LQR (target >= 30 %: missed; LQR is already
  1.003x the optimum and IPOPT's ten or so barrier iterations do not shrink for a start closer
  still), 48.5 % fewer than from zeros.  trc's plan alone is 0.92 % above the optimum (median
  0.45 %; target <= 1 %: met), its closed loop 0.42 %; trc takes 8.0 ms for one start (8x
  faster than IPOPT's 60.9 ms from LQR) and 19.1 us per start at batch 1024 (3184x; target
  >= 100x: met).
* Constrained Van der Pol, where the clipped LQR teacher is weak: 38.8 % fewer iterations than
  from LQR and 43.7 % fewer than from zeros, every start at the same optimum (target >= 30 %:
  met); wall time 0.60x LQR's; trc's plan alone 0.82 % above the optimum (median 0.21 %).  With
  the recipe's 60 epochs before: 10.4 / 11.1 iterations, 37.6 % and 42.6 % fewer, 0.62x.
* Pendulum: iterations say little here, since from LQR and from zeros IPOPT converges in 74-103
  iterations to costlier local optima (it reaches the best optimum found on 12 % and 8 % of the
  starts).  Started from trc's closed-loop controls it reaches it on 96 %, at a mean cost of
  212.8 against 316.4 and 333.8, but in 377 iterations on average (IPOPT reports a fifth of
  them unconverged): on the swing-up trc's start
  decides which optimum IPOPT finds, not how fast.  trc's closed loop alone is cheaper still,
  6.0 % below the best optimum IPOPT found from the four starts (median 25 % below; the optimal
  expert, a multi-start DDP, is cheaper than both).  (With the 160-epoch self-play
  model before the recipe's closed-loop tuning: 142.0 / 609.8 iterations, the best optimum from
  trc_cl on 90 % of the starts.)

With ``--ipopt warm`` (a small initial barrier parameter; Van der Pol, a 250-epoch model of the
same kind, 1.009x) IPOPT needed 11.1 iterations from trc's plan, 8.4 from LQR's and 28.5 from
zeros: on Van der Pol LQR's plan (1.003x) is closer to the optimum than trc's, so no IPOPT setting
makes trc the better start there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from beyond_teacher import train  # noqa: E402
from vanderpol import cached  # noqa: E402

from trc import get_problem  # noqa: E402
from trc.data.datasets import generate_dataset  # noqa: E402
from trc.data.experts import initial_guesses, lqr_controls, optimal_controls  # noqa: E402
from trc.evaluation.closed_loop import closed_loop  # noqa: E402
from trc.models.checkpoint import load_checkpoint  # noqa: E402
from trc.training.recipe import recipe  # noqa: E402


def _casadi_model(problem):
    """``(f(x, u), error(x, target))`` of ``problem`` in CasADi: dynamics and the cost's state error."""
    import casadi as ca

    def error(x, tg):
        return x - tg

    if problem.name.startswith("vanderpol"):
        def f(x, u):
            return ca.vertcat(x[1], problem.mu * (1 - x[0] ** 2) * x[1] - x[0] + u[0])
    elif problem.name == "double_integrator":
        def f(x, u):
            return ca.vertcat(x[1], u[0])
    elif problem.name == "pendulum":  # its own cost: the chord of the angle error (trc/problems/pendulum.py)
        ml2 = problem.m * problem.l ** 2

        def f(x, u):
            return ca.vertcat(x[1], problem.g / problem.l * ca.sin(x[0]) - problem.b / ml2 * x[1] + u[0] / ml2)

        def error(x, tg):
            return ca.vertcat(2 * ca.sin((x[0] - tg[0]) / 2), x[1] - tg[1])
    else:
        raise SystemExit(f"no CasADi dynamics for {problem.name}")
    return f, error


# IPOPT's options for a start that is already close: a small initial barrier parameter and little
# pushing of the start into the box (its defaults, mu_init = 0.1, first move any start far from it).
IPOPT_WARM = {"ipopt.mu_init": 1e-6, "ipopt.warm_start_init_point": "yes", "ipopt.bound_push": 1e-9,
              "ipopt.bound_frac": 1e-9, "ipopt.warm_start_bound_push": 1e-9, "ipopt.warm_start_bound_frac": 1e-9}


def _rk4_step(f, x, u, dt: float):
    """One RK4 step of the CasADi dynamics ``f`` (zero-order hold), as in ``trc.dynamics.rk4``."""
    k1 = f(x, u)
    k2 = f(x + dt / 2 * k1, u)
    k3 = f(x + dt / 2 * k2, u)
    k4 = f(x + dt * k3, u)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def casadi_cost(problem, tol: float = 1e-10, max_iter: int = 1000, options: dict | None = None):
    """The problem's cost ``J(U; x0, target)`` and gradient as CasADi functions (single shooting)."""
    import casadi as ca

    T, dt, m = problem.horizon, problem.dt, problem.n_u
    Q, R, Qf = (np.array(M) for M in (problem.Q, problem.R, problem.Qf))
    f, error = _casadi_model(problem)
    U = ca.SX.sym("U", T * m)
    x0, tg = ca.SX.sym("x0", problem.n_x), ca.SX.sym("tg", problem.n_x)
    x, J = x0, 0
    for t in range(T):
        u = U[t * m:(t + 1) * m]
        e = error(x, tg)
        J += ca.mtimes([e.T, Q, e]) + ca.mtimes([u.T, R, u])
        x = _rk4_step(f, x, u, dt)
    e = error(x, tg)
    J += ca.mtimes([e.T, Qf, e])
    params = ca.vertcat(x0, tg)
    ipopt = ca.nlpsol("ipopt", "ipopt", {"x": U, "p": params, "f": J},
                      {"ipopt.print_level": 0, "print_time": 0, "ipopt.tol": tol,
                       "ipopt.max_iter": max_iter, "ipopt.sb": "yes", **(options or {})})
    fg = ca.Function("fg", [U, params], [J, ca.gradient(J, U)])
    return ipopt, fg


def casadi_multiple_shooting(problem, tol: float = 1e-10, max_iter: int = 1000):
    """IPOPT on the multiple-shooting transcription: variables ``(U, x_1..x_T)``, the RK4 step as
    equality constraints.  Far better conditioned than single shooting on unstable dynamics (the
    upright pendulum), where single-shooting IPOPT stalls in poor local minima."""
    import casadi as ca

    T, dt, m, n = problem.horizon, problem.dt, problem.n_u, problem.n_x
    Q, R, Qf = (np.array(M) for M in (problem.Q, problem.R, problem.Qf))
    f, error = _casadi_model(problem)
    U, Xs = ca.SX.sym("U", T * m), ca.SX.sym("X", T * n)
    x0, tg = ca.SX.sym("x0", n), ca.SX.sym("tg", n)
    x, J, g = x0, 0, []
    for t in range(T):
        u, xn = U[t * m:(t + 1) * m], Xs[t * n:(t + 1) * n]
        e = error(x, tg)
        J += ca.mtimes([e.T, Q, e]) + ca.mtimes([u.T, R, u])
        g.append(xn - _rk4_step(f, x, u, dt))
        x = xn
    e = error(x, tg)
    J += ca.mtimes([e.T, Qf, e])
    return ca.nlpsol("ipopt_ms", "ipopt", {"x": ca.vertcat(U, Xs), "p": ca.vertcat(x0, tg), "f": J,
                                           "g": ca.vertcat(*g)},
                     {"ipopt.print_level": 0, "print_time": 0, "ipopt.tol": tol,
                      "ipopt.max_iter": max_iter, "ipopt.sb": "yes"})


def reference_costs(problem, x0, target, methods, seed=0):
    """Best cost per instance of each reference method over several starts; seconds per solve; the starts' number.

    The starts: LQR, zero, +-u_max, the problem's own warm starts (the pendulum's swing-up)
    and two random sequences.  IPOPT solves the multiple-shooting transcription
    (:func:`casadi_multiple_shooting`) from each start and its simulated trajectory.
    """
    from scipy.optimize import minimize

    _, fg = casadi_cost(problem)
    ipopt = casadi_multiple_shooting(problem) if "ipopt" in methods else None
    starts = initial_guesses(problem, x0, target, ("lqr", "zero", "upper", "lower", "problem"))
    rng = np.random.default_rng(seed)
    rand = rng.uniform(-problem.u_max, problem.u_max, (2, *starts.shape[1:]))
    starts = torch.cat([starts, torch.from_numpy(rand).to(starts.dtype)])      # (S, B, T, m)
    S, T, n = starts.shape[0], problem.horizon, problem.n_x
    states = problem.rollout(x0.repeat(S, 1), starts.flatten(0, 1))[:, 1:].reshape(S, x0.shape[0], T * n).numpy()
    starts = starts.reshape(S, x0.shape[0], -1).numpy()
    lbw = np.r_[np.full(starts.shape[-1], -problem.u_max), np.full(T * n, -np.inf)]
    ubw = np.r_[np.full(starts.shape[-1], problem.u_max), np.full(T * n, np.inf)]
    best = {k: np.full(x0.shape[0], np.inf) for k in methods}
    seconds = {k: 0.0 for k in methods}
    bounds = [(-problem.u_max, problem.u_max)] * starts.shape[-1]
    for i in range(x0.shape[0]):
        p = np.r_[x0[i].numpy(), target[i].numpy()]
        for s, xs in zip(starts[:, i], states[:, i]):
            if "ipopt" in methods:
                t = time.perf_counter()
                r = ipopt(x0=np.r_[s, xs], p=p, lbx=lbw, ubx=ubw, lbg=0, ubg=0)
                seconds["ipopt"] += time.perf_counter() - t
                best["ipopt"][i] = min(best["ipopt"][i], float(r["f"]))
            if "lbfgsb" in methods:
                def fun(u):
                    J, g = fg(u, p)
                    return float(J), np.asarray(g).ravel()
                t = time.perf_counter()
                r = minimize(fun, s, jac=True, method="L-BFGS-B", bounds=bounds,
                             options={"maxiter": 20000, "maxfun": 50000, "ftol": 1e-15, "gtol": 1e-9})
                seconds["lbfgsb"] += time.perf_counter() - t
                best["lbfgsb"][i] = min(best["lbfgsb"][i], float(r.fun))
    solves = x0.shape[0] * starts.shape[0]
    return best, {k: v / solves for k, v in seconds.items()}, starts.shape[0]


def timed(fn, repeats, clock=time.perf_counter):
    times, out = [], None
    for _ in range(repeats):
        t = clock()
        out = fn()
        times.append(clock() - t)
    return out, min(times)


# The problems of the warm-start report (--warm_start); adding a problem is one entry here (and its
# CasADi model in _casadi_model).
WARM_START_PROBLEMS = ("vanderpol", "vanderpol_constrained", "pendulum")


def trained_planner(name: str, args):
    """The trc model that warm-starts IPOPT on problem ``name``.

    ``--checkpoint name=path`` loads one; otherwise it is what a user gets: ``trc train`` with no
    other flag (the default recipe, self-play included where the recipe turns it on) on
    ``--warm_train`` LQR demonstrations, ``--warm_epochs`` overriding the recipe's epochs; cached in
    ``--cache_dir``, so a second run loads it.
    """
    paths = dict(spec.split("=", 1) for spec in args.checkpoint)
    if name in paths:
        return load_checkpoint(paths[name], problem=name), f"checkpoint {paths[name]}"
    epochs = args.warm_epochs or recipe(name)["epochs"]
    cache = Path(args.cache_dir)
    data = cache / f"{name}_lqr_{args.warm_train}.npz"
    cached(data, lambda: generate_dataset(get_problem(name), args.warm_train, "lqr", seed=0))
    out = cache / f"warm-{name}-n{args.warm_train}-e{epochs}-s{args.seed}"
    how = "loaded from the cache"
    if not (out / "best_model.pt").exists():
        t = train(data, name, [], args.seed, args.warm_epochs, out)
        how = f"trained in {t['train_wall_s']:.0f} s"
    return (load_checkpoint(out / "best_model.pt", problem=name),
            f"trc train's default recipe, {args.warm_train} LQR demonstrations, {epochs} epochs, {how}")


def warm_start_report(name: str, args) -> None:
    """IPOPT from trc's plan, from clipped LQR and from zeros: iterations, time, optimum reached;
    and trc's own time per start at batch 1 and 1024 against IPOPT's."""
    problem = get_problem(name)
    model, how = trained_planner(name, args)
    model = model.float().eval()
    ipopt, _ = casadi_cost(problem, tol=args.warm_tol, options=IPOPT_WARM if args.ipopt == "warm" else None)
    gen = torch.Generator().manual_seed(args.seed + 12345)  # states no model was trained on
    x0 = problem.sample_initial_states(args.num_warm, gen, dtype=torch.float64)
    target = problem.target_like(x0)
    with torch.no_grad():
        U_trc = problem.clip(model.plan(x0.float()).double())
        # the controls trc applies when it replans at every step from where the system is
        U_closed = closed_loop(model, x0.float(), replan_every=1).U.double()
    starts = {"trc": U_trc, "trc_cl": U_closed, "lqr": lqr_controls(problem, x0, target),
              "zero": torch.zeros_like(U_trc)}
    iters = {k: np.zeros(len(x0)) for k in starts}
    secs = {k: np.zeros(len(x0)) for k in starts}
    cpu = {k: np.zeros(len(x0)) for k in starts}
    cost = {k: np.zeros(len(x0)) for k in starts}
    ok = {k: np.zeros(len(x0), bool) for k in starts}
    for i in range(len(x0)):
        p = np.r_[x0[i].numpy(), target[i].numpy()]
        for k, U in starts.items():
            t, c = time.perf_counter(), time.process_time()
            r = ipopt(x0=U[i].numpy().ravel(), p=p, lbx=-problem.u_max, ubx=problem.u_max)
            secs[k][i], cpu[k][i] = time.perf_counter() - t, time.process_time() - c
            stats = ipopt.stats()
            iters[k][i], cost[k][i], ok[k][i] = stats["iter_count"], float(r["f"]), stats["success"]
    best = np.minimum.reduce(list(cost.values()))
    at_best = {k: np.abs(cost[k] - best) <= 1e-6 * np.maximum(1.0, best) for k in starts}
    print(f"== warm start, {name}: IPOPT ({args.ipopt} options, exact Hessian, tol {args.warm_tol:g}) on {len(x0)} new start states; "
          f"planner: {how}")
    print(f"   {'start':6s} {'iterations mean':>15s} {'median':>7s} {'ms/solve':>9s} {'converged':>10s} "
          f"{'at best optimum':>16s} {'mean final cost':>16s}")
    for k in starts:
        print(f"   {k:6s} {iters[k].mean():15.1f} {np.median(iters[k]):7.0f} {1e3 * secs[k].mean():9.1f} "
              f"{ok[k].mean():10.0%} {at_best[k].mean():16.0%} {cost[k].mean():16.6g}")
    for mine, other in (("trc", "lqr"), ("trc", "zero"), ("trc_cl", "lqr"), ("trc_cl", "zero")):
        same = at_best[mine] & at_best[other]
        fewer = 1 - iters[mine][same].sum() / max(1, iters[other][same].sum())
        print(f"   {mine:6s} vs {other:4s}: {fewer:+.1%} fewer iterations on the {same.sum()} states where both "
              f"reach the best optimum (all states: {1 - iters[mine].mean() / iters[other].mean():+.1%}); "
              f"wall time {secs[mine].mean() / secs[other].mean():.2f}x   [target: >= 30 % fewer]")
    plan_cost = problem.evaluate(x0, U_trc)["cost"].numpy()
    above = plan_cost / best - 1
    closed_above = problem.evaluate(x0, U_closed)["cost"].numpy() / best - 1
    x_big = problem.sample_initial_states(1024, gen, dtype=torch.float32)
    _, t1 = timed(lambda: model.plan(x0[:1].float()), args.repeats * 10)
    _, t1024 = timed(lambda: model.plan(x_big), args.repeats)
    _, c1 = timed(lambda: model.plan(x0[:1].float()), args.repeats * 10, clock=time.process_time)
    _, c1024 = timed(lambda: model.plan(x_big), args.repeats, clock=time.process_time)
    ipopt_s = secs["lqr"].mean()
    print(f"   trc's plan alone: mean cost {np.mean(above):+.2%} above the best optimum (median {np.median(above):+.2%}, "
          f"ratio of means {plan_cost.mean() / best.mean() - 1:+.2%})   [target on vanderpol: <= +1 %]; "
          f"its closed loop {np.mean(closed_above):+.2%} (median {np.median(closed_above):+.2%})")
    ipopt_c = cpu["lqr"].mean()
    print(f"   trc time per start, wall: batch 1 {1e3 * t1:.2f} ms ({ipopt_s / t1:.0f}x faster than IPOPT from LQR, "
          f"{1e3 * ipopt_s:.1f} ms), batch 1024 {1e6 * t1024 / 1024:.1f} us ({ipopt_s / (t1024 / 1024):.0f}x)   "
          f"[target on vanderpol: >= 100x]")
    print(f"   trc time per start, CPU:  batch 1 {1e3 * c1:.2f} ms ({ipopt_c / c1:.0f}x faster than IPOPT from LQR, "
          f"{1e3 * ipopt_c:.1f} ms), batch 1024 {1e6 * c1024 / 1024:.1f} us ({ipopt_c / (c1024 / 1024):.0f}x)",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="vanderpol,vanderpol_constrained")
    ap.add_argument("--num_lqr", type=int, default=10000)
    ap.add_argument("--num_opt", type=int, default=1000)
    ap.add_argument("--num_ref", type=int, default=100, help="instances checked against the references")
    ap.add_argument("--reference", default="ipopt,lbfgsb", help="comma list of ipopt, lbfgsb; empty: none")
    ap.add_argument("--repeats", type=int, default=3, help="timings report the minimum of this many runs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm_start", action="store_true",
                    help="report IPOPT warm-started from trc's plan vs LQR vs zeros instead (needs casadi)")
    ap.add_argument("--warm_problems", default=",".join(WARM_START_PROBLEMS))
    ap.add_argument("--num_warm", type=int, default=50, help="start states solved from each start")
    ap.add_argument("--warm_tol", type=float, default=1e-8, help="IPOPT's tolerance for the warm-start report")
    ap.add_argument("--ipopt", choices=("default", "warm"), default="default",
                    help="IPOPT's own defaults, or options for a close start (IPOPT_WARM), for every start alike")
    ap.add_argument("--checkpoint", action="append", default=[], metavar="PROBLEM=PATH",
                    help="the trc model of a problem (default: trc train with no other flag, trained here)")
    ap.add_argument("--warm_train", type=int, default=1000, help="demonstrations of a model trained here")
    ap.add_argument("--warm_epochs", type=int, default=None,
                    help="epochs of a model trained here (default: trc train's for the problem)")
    ap.add_argument("--cache_dir", default="runs/bench_cache", help="where a model trained here is cached")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.warm_start:
        for name in args.warm_problems.split(","):
            warm_start_report(name, args)
        return
    methods = [m for m in args.reference.split(",") if m]
    for name in args.problems.split(","):
        problem = get_problem(name)
        gen = torch.Generator().manual_seed(args.seed)
        x0 = problem.sample_initial_states(max(args.num_lqr, args.num_opt), gen, dtype=torch.float64)
        U_lqr, t_lqr = timed(lambda: lqr_controls(problem, x0[:args.num_lqr]), args.repeats)
        xo = x0[:args.num_opt]
        opt_repeats = max(1, args.repeats - 1)   # the slow one
        U_opt, t_opt = timed(lambda: optimal_controls(problem, xo), opt_repeats)
        lqr = problem.evaluate(x0[:args.num_lqr], U_lqr)
        lqr_o, opt = problem.evaluate(xo, U_lqr[:args.num_opt]), problem.evaluate(xo, U_opt)
        print(f"== {name} (float64, 1 thread, best of {args.repeats} runs, the optimal expert's of {opt_repeats})")
        print(f"LQR      {args.num_lqr:6d} instances {t_lqr:7.3f} s   success {lqr['success'].double().mean():.1%}")
        print(f"optimal  {args.num_opt:6d} instances {t_opt:7.3f} s   success {opt['success'].double().mean():.1%}"
              f"   (LQR on these: {lqr_o['success'].double().mean():.1%})")
        print(f"mean cost LQR / optimal = {lqr_o['cost'].mean() / opt['cost'].mean():.4f}"
              f"   optimal never above LQR: {bool((opt['cost'] <= lqr_o['cost'] * (1 + 1e-12)).all())}"
              f"   bound respected: {bool((U_opt.abs() <= problem.u_max).all())}")
        if not methods or args.num_ref <= 0:
            continue
        n = min(args.num_ref, args.num_opt)
        best, secs, num_starts = reference_costs(problem, xo[:n], problem.target_like(xo[:n]), methods, args.seed)
        ours = opt["cost"][:n].numpy()
        known = np.minimum.reduce([ours, *best.values()])
        for k, v in best.items():
            print(f"reference {k:7s} ({secs[k] * 1e3:6.1f} ms per solve, {num_starts} starts, {n} instances): "
                  f"mean cost optimal / {k} - 1 = {ours.mean() / v.mean() - 1:+.1e}   "
                  f"instances where optimal is >0.1% above it: {(ours > v * 1.001).sum()}   "
                  f"{k} >0.1% above optimal: {(v > ours * 1.001).sum()}")
        print(f"mean cost optimal / best known - 1 = {ours.mean() / known.mean() - 1:+.1e}"
              f"   LQR / best known = {lqr_o['cost'][:n].numpy().mean() / known.mean():.4f}")


if __name__ == "__main__":
    main()
