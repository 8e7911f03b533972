"""``trc generate``: draw start states, solve each with an expert, write an ``.npz`` dataset."""

from __future__ import annotations

import math

from trc.cli import seed_arg
from trc.data.datasets import MAX_DATASET_BYTES, generate_dataset, save_dataset
from trc.data.experts import EXPERTS
from trc.errors import TRCError
from trc.io import check_writable
from trc.problems import PROBLEMS, get_problem


def add_generate_command(sub) -> None:
    """Add ``trc generate`` to the CLI's subparsers."""
    p = sub.add_parser("generate", help="write expert demonstrations to an .npz dataset",
                       description="Draw start states, solve each with an expert, write an .npz dataset. "
                                   f"A dataset holds at most {MAX_DATASET_BYTES / 2**30:g} GiB of arrays "
                                   "(about 3.5 million Van der Pol samples of horizon 100); a progress bar "
                                   "shows on a terminal.")
    p.add_argument("--problem", default="vanderpol",
                   help=f"one of: {', '.join(sorted(PROBLEMS))}, a name an installed package registers "
                        f"(entry points 'trc.problems'), or module:Name for a ControlProblem in your own "
                        f"module")
    p.add_argument("--num_samples", type=int, default=10000, help="number of demonstrations")
    p.add_argument("--output", required=True, help="the .npz file to write, e.g. data/vanderpol_lqr_10k.npz")
    p.add_argument("--expert", default="lqr",
                   help=f"one of: {', '.join(sorted(EXPERTS))} (default: lqr, for demonstrations; 'optimal', also "
                        "spelled 'optimum', for reference sets)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the start states, an integer in [0, 2**63 - 1]")
    p.add_argument("--horizon", type=int, default=None,
                   help="override the problem's horizon T (default: the problem's)")
    p.add_argument("--dt", type=float, default=None, help="override the problem's time step (default: the problem's)")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    """``trc generate``: validate the flags, generate, write atomically, print one summary line."""
    if args.num_samples <= 0:
        raise TRCError(f"--num_samples must be positive, got {args.num_samples}")
    if args.horizon is not None and args.horizon <= 0:
        raise TRCError(f"--horizon must be positive, got {args.horizon}")
    if args.dt is not None and not (math.isfinite(args.dt) and args.dt > 0):
        raise TRCError(f"--dt must be a positive number, got {args.dt}")
    if args.expert == "optimum":  # the and the book's word for the optimal expert
        args.expert = "optimal"
    if args.expert not in EXPERTS:
        raise TRCError(f"unknown expert {args.expert!r}; known experts: {', '.join(sorted(EXPERTS))}")
    overrides = {k: getattr(args, k) for k in ("horizon", "dt") if getattr(args, k) is not None}
    problem = get_problem(args.problem, **overrides)
    check_writable(args.output)
    data = generate_dataset(problem, args.num_samples, args.expert, args.seed, progress=True)
    path = save_dataset(args.output, data)
    meta = data["metadata"]
    print(f"wrote {path}: {args.num_samples} samples of {problem.name} by the {args.expert} expert "
          f"(seed {args.seed}), mean cost {meta['mean_cost']:.4g}, success rate {meta['success_rate']:.1%}")
    return 0
