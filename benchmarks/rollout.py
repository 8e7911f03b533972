"""Plain autograd through the RK4 loop vs the fast rollout (trc.adjoint), side by side.

Times forward+backward (gradient of a scalar of X w.r.t. x0 and U) and the
forward alone under ``torch.no_grad``, on Van der Pol with T = 100, and prints
the median over repeats with the speedup.  The clock is this process's CPU
time by default: on a shared machine other processes inflate wall time, not
the CPU time of the work measured (``--clock wall`` for wall time).

    python benchmarks/rollout.py                      # batch 64 and 1000, float32, 1 thread
    python benchmarks/rollout.py --batch 64 --repeats 5 --dtype float64 --clock wall

Measured (the defaults, median CPU time of 21 runs, a 2-core machine with a training on the other core):

=====  ==================  ========  =======  =======
batch  pass                plain ms  fast ms  speedup
=====  ==================  ========  =======  =======
64     forward+backward    46.60     5.42     8.60x
64     forward, no_grad    13.66     3.71     3.68x
1000   forward+backward    61.66     14.66    4.21x
1000   forward, no_grad    15.47     4.18     3.70x
=====  ==================  ========  =======  =======
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from trc import get_problem
from trc.dynamics import rk4, rollout


def median_ms(fns: list[Callable[[], object]], repeats: int, clock: Callable[[], float]) -> list[float]:
    """Median time of each ``fn()`` by ``clock``, in milliseconds, after one warm-up call each.

    The functions run in turn within each repeat, so that a change of machine
    load affects all of them alike.
    """
    times: list[list[float]] = [[] for _ in fns]
    for fn in fns:
        fn()
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            start = clock()
            fn()
            ts.append(clock() - start)
    return [1e3 * statistics.median(ts) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", default="vanderpol")
    parser.add_argument("--horizon", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs="+", default=[64, 1000])
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    problem = get_problem(args.problem, horizon=args.horizon)
    step = rk4(problem.dynamics, problem.dt)
    plain = lambda x0, U: rollout(step, x0, U)  # noqa: E731

    print(f"{problem.name}, T={problem.horizon}, {args.dtype}, {args.threads} thread(s), "
          f"median {args.clock} time of {args.repeats} runs (ms)")
    print(f"{'batch':>6} {'pass':<18} {'plain':>9} {'fast':>9} {'speedup':>8}")
    for batch in args.batch:
        gen = torch.Generator().manual_seed(0)
        x0 = problem.sample_initial_states(batch, gen, dtype=dtype).requires_grad_()
        U = (problem.u_max * (2 * torch.rand(batch, problem.horizon, problem.n_u, generator=gen) - 1))
        U = U.to(dtype).requires_grad_()
        weight = torch.randn(batch, problem.horizon + 1, problem.n_x, generator=gen).to(dtype)

        def backward(sim):
            def run():
                (sim(x0, U) * weight).sum().backward()
                x0.grad = U.grad = None
            return run

        def forward(sim):
            def run():
                with torch.no_grad():
                    sim(x0, U)
            return run

        for name, make in (("forward+backward", backward), ("forward, no_grad", forward)):
            t_plain, t_fast = median_ms([make(plain), make(problem.rollout)], args.repeats, clock)
            print(f"{batch:>6} {name:<18} {t_plain:>9.2f} {t_fast:>9.2f} {t_plain / t_fast:>7.2f}x")


if __name__ == "__main__":
    main()
