"""Time of one process-supervision training step on one CPU thread.

The step ``trc train`` takes: the model with every iterate returned, the loss
(all ``K+1`` iterates simulated in one batched call, with gradient), backward,
gradient clipping and the AdamW update.  Default: the two-level medium preset
with its own K = 3 (``trc train --use_two_level --model_size medium --iterations 3``;
``trc train`` defaults to K = 2, a third less), Van der Pol, batch 32.  Target: at most
0.030 s (the speed table; ``benchmarks/speed.py`` prints its row).  Also shows where
the time goes and the same step
for behavior cloning and the seed's loss.

Timings are the minimum and median wall time of ``--repeats`` steps and the
minimum CPU time (with one thread, what the wall time would be on an idle machine).

    python benchmarks/train_step.py
    python benchmarks/train_step.py --model_size small --batch_size 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from trc import get_problem
from trc.data.experts import lqr_controls
from trc.training.process_supervision import DEFAULT_VARIANT
from trc.training.supervised_trainer import ProcessSupervisionObjective
from trc.training.train import build_model

from speed import training_step  # benchmarks/speed.py: the step both scripts time


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """(min wall, median wall, min CPU) seconds of ``fn()`` after two warm-up calls."""
    fn()
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), statistics.median(wall), min(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problem", default="vanderpol")
    ap.add_argument("--model_size", default="medium")
    ap.add_argument("--single_latent", action="store_true", help="single-latent preset instead of two-level")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    problem = get_problem(args.problem)
    model = build_model(problem, args.model_size, use_two_level=not args.single_latent)
    params = list(model.parameters())
    print(f"{problem.name}, {'single-latent' if args.single_latent else 'two-level'} {args.model_size} "
          f"({sum(p.numel() for p in params)} parameters, K={model.num_iterations}), batch {args.batch_size}, "
          f"1 thread")

    for name, weight, variant in (("PS " + DEFAULT_VARIANT, 1.0, DEFAULT_VARIANT), ("PS seed", 1.0, "seed"),
                                  ("BC", 0.0, DEFAULT_VARIANT)):
        step = training_step(model, problem, args.batch_size,
                             objective=ProcessSupervisionObjective(problem, weight, variant))
        lo, med, cpu = timed(step, args.repeats)
        verdict = "  (target <= 0.030 s)" if name.startswith("PS " + DEFAULT_VARIANT) else ""
        print(f"  {name:9s} step: wall min {lo:.4f} s, median {med:.4f} s; CPU min {cpu:.4f} s{verdict}")

    x0 = problem.sample_initial_states(args.batch_size, torch.Generator().manual_seed(0))
    batch = {"initial_states": x0, "target_states": problem.target_like(x0).clone(),
             "control_sequences": lqr_controls(problem, x0)}
    objective = ProcessSupervisionObjective(problem, 1.0)
    forward = lambda: model(batch["initial_states"], batch["target_states"], return_all_iterations=True)
    lo, _, cpu = timed(forward, args.repeats)
    print(f"  of which model forward (K simulator feedbacks): wall min {lo:.4f} s, CPU min {cpu:.4f} s")

    out = forward()
    lo, _, cpu = timed(lambda: objective.loss_of(out, batch), args.repeats)
    print(f"  of which loss forward (one batched rollout of all iterates): wall min {lo:.4f} s, CPU min {cpu:.4f} s")


if __name__ == "__main__":
    main()
