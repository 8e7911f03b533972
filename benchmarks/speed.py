"""The speed table: one line per figure, minimum over repeats, one thread.

Rows (Van der Pol, float32):

1. ``model.plan`` of 1000 start states, two-level medium preset with its K = 3
   (and with ``trc train``'s default K = 2);
2. one rollout of 1000 start states, T = 100, forward without gradient, by
   ``problem.rollout`` (and by the plain reference ``trc.dynamics.rollout``);
3. one process-supervision training step (forward with every iterate, the
   default loss, backward, clipping, AdamW), two-level medium, K = 3, batch 32;
4. the step the book's chapters train with (``trc train`` defaults: small
   single-latent, K = 2, batch 64), which sets the book's build time.

Each figure is the minimum over ``--repeats`` runs of wall time and of this
process's CPU time: on a shared machine other processes inflate the wall time,
and with one thread the CPU time is what the wall time would be on an idle one.

    python benchmarks/speed.py
    python benchmarks/speed.py --repeats 50
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch

from trc import get_problem, rk4, rollout
from trc.data.experts import lqr_controls
from trc.models.tiny_recursive_control import TinyRecursiveControl
from trc.training.supervised_trainer import ProcessSupervisionObjective
from trc.training.train import DEFAULTS, build_model


def minimum_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(min wall, min CPU) milliseconds of ``fn()`` over ``repeats`` runs, after two warm-up calls."""
    fn()
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return 1e3 * min(wall), 1e3 * min(cpu)


def training_step(model, problem, batch_size: int, seed: int = 0,
                  objective: ProcessSupervisionObjective | None = None) -> Callable[[], None]:
    """One step of ``trc train`` (``objective``, default: the default loss) on a fixed batch of LQR demonstrations."""
    x0 = problem.sample_initial_states(batch_size, torch.Generator().manual_seed(seed))
    batch = {"initial_states": x0, "target_states": problem.target_like(x0).clone(),
             "control_sequences": lqr_controls(problem, x0)}
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    objective = objective or ProcessSupervisionObjective(problem, 1.0)

    def step() -> None:
        loss, _ = objective(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    problem = get_problem("vanderpol")
    x0 = problem.sample_initial_states(1000, torch.Generator().manual_seed(0))
    U = problem.clip(2 * torch.randn(1000, problem.horizon, problem.n_u, generator=torch.Generator().manual_seed(1)))

    rows: list[tuple[str, Callable[[], object], str]] = []
    for K in (3, 2):
        model = TinyRecursiveControl.from_preset("two_level_medium", problem, num_outer_cycles=K).eval()
        rows.append((f"plan 1000 starts, two-level medium, K = {K}", lambda m=model: m.plan(x0),
                     "<= 60 ms" if K == 3 else ""))
    step = rk4(problem.dynamics, problem.dt)
    with_no_grad = lambda fn: lambda: torch.no_grad()(fn)()  # noqa: E731
    rows.append(("rollout 1000 starts, T = 100, no grad", with_no_grad(lambda: problem.rollout(x0, U)), "<= 5 ms"))
    rows.append(("  the plain reference (trc.dynamics)", with_no_grad(lambda: rollout(step, x0, U)), ""))
    torch.manual_seed(0)
    medium = build_model(problem, "medium", use_two_level=True, iterations=3)
    rows.append(("PS training step, two-level medium, K = 3, batch 32", training_step(medium, problem, 32),
                 "<= 30 ms"))
    torch.manual_seed(0)
    small = build_model(problem, DEFAULTS["model_size"], iterations=DEFAULTS["iterations"])
    rows.append(("PS training step, the book's (small, K = 2, batch 64)", training_step(small, problem, 64), ""))

    print(f"vanderpol, float32, 1 thread; minimum of {args.repeats} runs (wall time is inflated by other "
          f"processes on a shared machine, CPU time is not)")
    print(f"{'':55s} {'wall ms':>8s} {'CPU ms':>8s}  target")
    for name, fn, target in rows:
        wall, cpu = minimum_ms(fn, args.repeats)
        print(f"{name:55s} {wall:8.1f} {cpu:8.1f}  {target}")


if __name__ == "__main__":
    main()
