"""Speed of the recursive planner on one CPU thread.

1. Inference: ``model.plan`` for 1000 Van der Pol start states with the
   two-level medium preset, every iteration returned, and the part of that
   time spent in the simulator (the K feedback rollouts).  Targets: at most
   100 ms (100x less than 1000 NLP solves at about 10 ms each) and no slower
   than the predecessor's 170-250 ms.
2. A training-style step at batch 32: forward with every iterate, a
   behaviour-cloning loss on all of them, backward; time and the activation
   memory autograd keeps for backward, with and without gradient truncation.

Timings are the minimum and median of ``--repeats`` runs (other work on the
machine inflates the median).  Run: ``python benchmarks/inference.py``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import trc
from trc.models.tiny_recursive_control import TinyRecursiveControl


def timed(fn, repeats: int) -> str:
    """Wall time (min, median) and CPU time (min) of ``fn()`` in ms, after one warm-up call.

    With one thread the CPU time is what the wall time would be on an idle machine.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1e3)
        cpu.append((time.process_time() - c) * 1e3)
    return f"wall min {min(wall):6.1f} ms, median {statistics.median(wall):6.1f} ms; CPU min {min(cpu):6.1f} ms"


def saved_tensor_bytes(fn) -> int:
    """Bytes of distinct tensors autograd saves for backward while ``fn()`` runs."""
    seen: dict[tuple, int] = {}

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="two_level_medium")
    parser.add_argument("--problem", default="vanderpol")
    parser.add_argument("--num_states", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    problem = trc.get_problem(args.problem)
    gen = torch.Generator().manual_seed(args.seed)

    model = TinyRecursiveControl.from_preset(args.preset, problem).eval()
    cfg = model.config
    print(f"{args.preset} on {args.problem}: {model.get_parameter_count()['total']:,} parameters, "
          f"K={cfg.num_outer_cycles}, H_cycles={cfg.H_cycles}, L_cycles={cfg.L_cycles}, "
          f"layers={cfg.num_layers}, latent={cfg.latent_dim}, hidden={cfg.hidden_dim}; torch threads: 1")

    # -- 1. inference -----------------------------------------------------------------
    x0 = problem.sample_initial_states(args.num_states, gen)
    U = model.plan(x0)
    target = problem.target_like(x0)
    plan_ms = timed(lambda: model.plan(x0, all_iterations=True), args.repeats)

    def simulate_feedback():
        with torch.no_grad():
            for _ in range(cfg.num_outer_cycles):
                model.feedback(x0, U, target)

    sim_ms = timed(simulate_feedback, args.repeats)
    print(f"\ninference, {args.num_states} states, all iterations "
          f"(target <= {args.num_states / 10:.0f} ms: 100x under {args.num_states} NLP solves at ~10 ms; "
          f"predecessor 170-250 ms per 1000):")
    print(f"  model.plan                        {plan_ms}")
    print(f"  its {cfg.num_outer_cycles} simulator feedbacks alone      {sim_ms}")

    # -- 2. training step ---------------------------------------------------------------
    xb = problem.sample_initial_states(args.batch_size, gen)
    expert = problem.clip(torch.randn(args.batch_size, problem.horizon, problem.n_u, generator=gen))
    schedules = {"preset": {}, "seed's H_cycles=3, L_cycles=4": dict(H_cycles=3, L_cycles=4)}
    for label, schedule in schedules.items():
        print(f"\ntraining step, batch {args.batch_size}, forward (all iterations) + backward, {label}:")
        for truncation in (False, True):
            train_step(args, problem, xb, expert, dict(schedule, use_gradient_truncation=truncation))


def train_step(args, problem, xb, expert, overrides: dict) -> None:
    """Print the time and backward memory of one training-style step of the preset with ``overrides``."""
    torch.manual_seed(args.seed)
    net = TinyRecursiveControl.from_preset(args.preset, problem, **overrides)

    def loss():
        out = net(xb, return_all_iterations=True)
        return ((out.all_controls - expert.unsqueeze(1)) ** 2).mean()

    def step():
        net.zero_grad(set_to_none=True)
        loss().backward()

    step_ms = timed(step, args.repeats)
    mem = saved_tensor_bytes(loss)
    print(f"  use_gradient_truncation={overrides['use_gradient_truncation']!s:5}  {step_ms}; "
          f"saved for backward {mem / 2**20:5.2f} MiB")


if __name__ == "__main__":
    main()
