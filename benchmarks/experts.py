"""Experts benchmark: LQR speed, and the optimal expert's speed and accuracy.

Prints, per problem: the time of 10,000 clipped-LQR demonstrations, the time
of the optimal expert on 1000 instances, mean-cost ratios LQR/optimal and
optimal/reference, and success rates.  The reference is independent of trc's
solver: CasADi + IPOPT (exact Hessian) and SciPy's L-BFGS-B, per instance,
each from several starts (LQR, zero, +-u_max, two random), on a subset; the
"best known" cost of an instance is the lowest any method found.

Needs ``casadi`` and ``scipy`` (``pip install casadi scipy``); neither is a
dependency of trc.  Run: ``python benchmarks/experts.py [--num_ref 50]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from trc import get_problem
from trc.data.experts import initial_guesses, lqr_controls, optimal_controls


def casadi_cost(problem):
    """The problem's cost ``J(U; x0, target)`` and gradient as CasADi functions (single shooting)."""
    import casadi as ca

    T, dt, m = problem.horizon, problem.dt, problem.n_u
    Q, R, Qf = (np.array(M) for M in (problem.Q, problem.R, problem.Qf))
    if problem.name.startswith("vanderpol"):
        def f(x, u):
            return ca.vertcat(x[1], problem.mu * (1 - x[0] ** 2) * x[1] - x[0] + u[0])
    elif problem.name == "double_integrator":
        def f(x, u):
            return ca.vertcat(x[1], u[0])
    else:
        raise SystemExit(f"no CasADi dynamics for {problem.name}")
    U = ca.SX.sym("U", T * m)
    x0, tg = ca.SX.sym("x0", problem.n_x), ca.SX.sym("tg", problem.n_x)
    x, J = x0, 0
    for t in range(T):
        u = U[t * m:(t + 1) * m]
        J += ca.mtimes([(x - tg).T, Q, x - tg]) + ca.mtimes([u.T, R, u])
        k1 = f(x, u)
        k2 = f(x + dt / 2 * k1, u)
        k3 = f(x + dt / 2 * k2, u)
        k4 = f(x + dt * k3, u)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    J += ca.mtimes([(x - tg).T, Qf, x - tg])
    params = ca.vertcat(x0, tg)
    ipopt = ca.nlpsol("ipopt", "ipopt", {"x": U, "p": params, "f": J},
                      {"ipopt.print_level": 0, "print_time": 0, "ipopt.tol": 1e-10,
                       "ipopt.max_iter": 1000, "ipopt.sb": "yes"})
    fg = ca.Function("fg", [U, params], [J, ca.gradient(J, U)])
    return ipopt, fg


def reference_costs(problem, x0, target, methods, seed=0):
    """Best cost per instance of each reference method over several starts; and seconds per solve."""
    from scipy.optimize import minimize

    ipopt, fg = casadi_cost(problem)
    starts = initial_guesses(problem, x0, target, ("lqr", "zero", "upper", "lower"))
    rng = np.random.default_rng(seed)
    rand = rng.uniform(-problem.u_max, problem.u_max, (2, *starts.shape[1:]))
    starts = np.concatenate([starts.numpy(), rand]).reshape(len(starts) + 2, x0.shape[0], -1)
    best = {k: np.full(x0.shape[0], np.inf) for k in methods}
    seconds = {k: 0.0 for k in methods}
    bounds = [(-problem.u_max, problem.u_max)] * starts.shape[-1]
    for i in range(x0.shape[0]):
        p = np.r_[x0[i].numpy(), target[i].numpy()]
        for s in starts[:, i]:
            if "ipopt" in methods:
                t = time.perf_counter()
                r = ipopt(x0=s, p=p, lbx=-problem.u_max, ubx=problem.u_max)
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
    return best, {k: v / solves for k, v in seconds.items()}


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="vanderpol,vanderpol_constrained")
    ap.add_argument("--num_lqr", type=int, default=10000)
    ap.add_argument("--num_opt", type=int, default=1000)
    ap.add_argument("--num_ref", type=int, default=100, help="instances checked against the references")
    ap.add_argument("--reference", default="ipopt,lbfgsb", help="comma list of ipopt, lbfgsb; empty: none")
    ap.add_argument("--repeats", type=int, default=3, help="timings report the minimum of this many runs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    methods = [m for m in args.reference.split(",") if m]
    for name in args.problems.split(","):
        problem = get_problem(name)
        gen = torch.Generator().manual_seed(args.seed)
        x0 = problem.sample_initial_states(max(args.num_lqr, args.num_opt), gen, dtype=torch.float64)
        U_lqr, t_lqr = timed(lambda: lqr_controls(problem, x0[:args.num_lqr]), args.repeats)
        xo = x0[:args.num_opt]
        U_opt, t_opt = timed(lambda: optimal_controls(problem, xo), max(1, args.repeats - 1))
        lqr = problem.evaluate(x0[:args.num_lqr], U_lqr)
        lqr_o, opt = problem.evaluate(xo, U_lqr[:args.num_opt]), problem.evaluate(xo, U_opt)
        print(f"== {name} (float64, 1 thread, best of {args.repeats})")
        print(f"LQR      {args.num_lqr:6d} instances {t_lqr:7.3f} s   success {lqr['success'].double().mean():.1%}")
        print(f"optimal  {args.num_opt:6d} instances {t_opt:7.3f} s   success {opt['success'].double().mean():.1%}"
              f"   (LQR on these: {lqr_o['success'].double().mean():.1%})")
        print(f"mean cost LQR / optimal = {lqr_o['cost'].mean() / opt['cost'].mean():.4f}"
              f"   optimal never above LQR: {bool((opt['cost'] <= lqr_o['cost'] * (1 + 1e-12)).all())}"
              f"   bound respected: {bool((U_opt.abs() <= problem.u_max).all())}")
        if not methods or args.num_ref <= 0:
            continue
        n = min(args.num_ref, args.num_opt)
        best, secs = reference_costs(problem, xo[:n], problem.target_like(xo[:n]), methods, args.seed)
        ours = opt["cost"][:n].numpy()
        known = np.minimum.reduce([ours, *best.values()])
        for k, v in best.items():
            print(f"reference {k:7s} ({secs[k] * 1e3:6.1f} ms per solve, 6 starts, {n} instances): "
                  f"mean cost optimal / {k} - 1 = {ours.mean() / v.mean() - 1:+.1e}   "
                  f"instances where optimal is >0.1% above it: {(ours > v * 1.001).sum()}   "
                  f"{k} >0.1% above optimal: {(v > ours * 1.001).sum()}")
        print(f"mean cost optimal / best known - 1 = {ours.mean() / known.mean() - 1:+.1e}"
              f"   LQR / best known = {lqr_o['cost'][:n].numpy().mean() / known.mean():.4f}")


if __name__ == "__main__":
    main()
