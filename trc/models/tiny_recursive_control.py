"""Tiny Recursive Control: plan open-loop controls and refine them with simulator feedback.

Shapes as in :mod:`trc.dynamics`; ``d`` is ``config.latent_dim``, ``K`` the
number of refinement iterations.  Given start states ``x0 [B, n_x]`` and
targets ``[B, n_x]``:

1. an encoder makes ``z_init [B, d]`` and an initial decoder proposes
   ``U_0 = u_max * tanh(head_0(z_init))``;
2. each refinement iteration ``k = 1..K`` simulates ``U_{k-1}`` with
   ``problem.rollout`` (no gradient: an observation; a run's ``dynamics_fn`` and
   ``cost_params`` instead inside :meth:`TinyRecursiveControl.simulated_by`), turns
   the result into feedback (:mod:`trc.models.feedback`: the final error, ``log(1 + cost)``
   and samples of the error trajectory, each on its scale), encodes it
   with ``U_{k-1} / u_max`` into a context, updates the latent(s) with ONE shared
   reasoning core (see :mod:`trc.models.config` for the two-level and single-latent
   schedules), and decodes a bounded residual
   ``U_k = clip(U_{k-1} + u_max * tanh(head(z_H)))``.

The clip is exact in the forward pass and the identity in the backward pass
(a straight-through clip), so gradients do not die when a control sits on its
bound.  Start states and targets must be finite (NaN or infinity is a ``TRCError``).
Far outside the start box a plan's simulation can diverge; its feedback then
saturates (see :mod:`trc.models.feedback`), so the controls stay
finite and within the bound, though the model was not trained there.  The recursion state is a :class:`TRCCarry` that starts from
``(z_H, z_L, U) = (z_init, 0, U_0)`` and is never rebuilt; with
``use_gradient_truncation`` the first ``H_cycles - 1`` cycles of every
iteration run without gradient and the carry is detached between iterations
(TRM), so only the last cycle of each iteration is backpropagated.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trc.models.config import PRESETS, TRCConfig, preset_config
from trc.models.feedback import Observer, symlog
from trc.models.halting import HaltingHead, should_halt
from trc.errors import TRCError, is_integer
from trc.problems import ControlProblem, get_problem
from trc.problems.base import HYSTERESIS

Tensor = torch.Tensor


@dataclass
class TRCCarry:
    """The recursion state between refinement iterations."""

    z_H: Tensor          # [B, d] high-level (or the single) latent; controls are decoded from it
    z_L: Tensor | None   # [B, d] low-level latent; None in single-latent mode
    U: Tensor            # [B, T, n_u] current bounded controls
    step: int = 0        # refinement iterations done
    seen: Tensor | None = None         # [B] log(1 + cost) of the plan the last iteration refined, simulated
    seen_before: Tensor | None = None  # [B] the same one iteration earlier (= seen after iteration 1)

    def detach(self) -> "TRCCarry":
        z_L = None if self.z_L is None else self.z_L.detach()
        return TRCCarry(self.z_H.detach(), z_L, self.U.detach(), self.step, self.seen, self.seen_before)

    def select(self, rows: Tensor) -> "TRCCarry":
        """The carry of some starts only (``rows``: a ``[B]`` bool mask or indices)."""
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return TRCCarry(self.z_H[rows], pick(self.z_L), self.U[rows], self.step, pick(self.seen),
                        pick(self.seen_before))


@dataclass
class TRCOutput:
    """What :class:`TinyRecursiveControl` returns; the optional fields need ``return_all_iterations``."""

    controls: Tensor                     # [B, T, n_u] after the last iteration, bounded
    final_latent: Tensor                 # [B, d] z_H after the last iteration
    all_controls: Tensor | None = None   # [B, K+1, T, n_u]; index 0 is U_0
    all_latents: Tensor | None = None    # [B, K+1, d]; index 0 is z_init
    z_H: Tensor | None = None            # [B, K * H_cycles, d] after every cycle (two-level only)
    z_L: Tensor | None = None            # [B, K * H_cycles, d] after every cycle (two-level only)

    def __getitem__(self, key: str) -> Tensor | None:
        """``out["all_controls"]`` as the seed's dict output reads; same as ``out.all_controls``."""
        if key not in self.keys():
            raise KeyError(f"{key!r}; TRCOutput has {', '.join(self.keys())}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys() and getattr(self, key) is not None

    def keys(self) -> tuple[str, ...]:
        """The field names."""
        return tuple(f.name for f in fields(self))


class _ClipSTE(torch.autograd.Function):
    """Clip to ``[-bound, bound]`` forward, identity backward."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: float) -> Tensor:
        return x.clamp(-bound, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


class MLP(nn.Sequential):
    """``Linear -> SiLU -> Linear``; ``mlp(x, bias, adapter)`` adds ``bias [hidden]`` to the hidden layer's
    input and, with ``adapter = ((A_0, B_0), (A_2, B_2))``, a low-rank term ``(x A^T) B^T`` to the output of
    each Linear (``A [r, in]``, ``B [out, r]``): a multi-problem planner's own (:mod:`trc.models.multi_problem`)."""

    def forward(self, x: Tensor, bias: Tensor | None = None, adapter=None) -> Tensor:
        h = _linear(self[0], x, None if adapter is None else adapter[0])
        return _linear(self[2], self[1](h if bias is None else h + bias), None if adapter is None else adapter[1])


def _linear(layer: nn.Linear, x: Tensor, factors: tuple[Tensor, Tensor] | None) -> Tensor:
    """``layer(x)``, plus ``(x A^T) B^T`` for ``factors = (A, B)``."""
    y = layer(x)
    return y if factors is None else y + (x @ factors[0].mT) @ factors[1].mT


def mlp(n_in: int, hidden: int, n_out: int) -> MLP:
    """``Linear -> SiLU -> Linear``."""
    return MLP(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, n_out))


class ReasoningCore(nn.Module):
    """``core(z, injection)``: post-norm residual MLP blocks on ``z + injection`` (TRM's L-level)."""

    def __init__(self, d: int, hidden: int, num_layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(mlp(d, hidden, d) for _ in range(num_layers))

    def forward(self, z: Tensor, injection: Tensor, biases: Tensor | None = None, adapters=None) -> Tensor:
        """``biases [num_layers, hidden]``: one hidden-layer bias per block, or None; ``adapters``: one
        :class:`MLP` adapter per block, or None."""
        h = z + injection                                      # (B, d)
        for i, block in enumerate(self.blocks):
            h = F.rms_norm(h + block(h, None if biases is None else biases[i],
                                     None if adapters is None else adapters[i]), h.shape[-1:])
        return h


def build_network(config: TRCConfig, n_x: int, n_u: int, horizon: int) -> dict[str, nn.Module]:
    """The trainable parts of a planner whose plans have up to ``horizon`` steps, by attribute name.

    The decoders emit ``horizon * n_u`` numbers and the context reads as many; a planner with a
    shorter horizon uses their first ``T * n_u`` (:mod:`trc.models.multi_problem`).
    """
    d, h, n_U = config.latent_dim, config.hidden_dim, horizon * n_u
    n_feedback = n_x + 1 + config.feedback_points * n_x                   # Observer.size
    network = {"encoder": mlp(2 * n_x, h, d), "initial_decoder": mlp(d, h, n_U),
               "context": mlp(n_U + n_feedback, h, d), "core": ReasoningCore(d, h, config.num_layers),
               "refine_decoder": mlp(d, h, n_U)}
    with torch.no_grad():  # an untrained model refines gently
        network["refine_decoder"][-1].weight.mul_(0.1)
        network["refine_decoder"][-1].bias.zero_()
    if config.use_halting:
        network["halt_head"] = HaltingHead(d + 3, h)
    return network


def _legacy_factory(preset: str):
    """``create_<preset>(state_dim, control_dim, control_horizon, control_bounds, problem)``."""

    def create(cls, state_dim: int = 2, control_dim: int = 1, control_horizon: int = 100,
               control_bounds: float | None = None, problem: ControlProblem | str | None = None,
               **overrides: Any) -> "TinyRecursiveControl":
        if problem is None:
            default = get_problem("vanderpol")
            if (state_dim, control_dim, control_horizon) != (default.n_x, default.n_u, default.horizon):
                raise TRCError(f"state_dim={state_dim}, control_dim={control_dim}, "
                               f"control_horizon={control_horizon} do not match the default problem "
                               f"'vanderpol' (2, 1, 100); pass problem= (a name or a ControlProblem)")
            problem = default
        dims = dict(state_dim=state_dim, control_dim=control_dim, control_horizon=control_horizon,
                    control_bounds=None if control_bounds is None else float(control_bounds))
        return cls.from_preset(preset, problem, **dims, **overrides)

    create.__name__ = f"create_{preset}"
    create.__doc__ = (f"The ``{preset}`` preset with the predecessor's signature; the problem defaults to "
                      f"'vanderpol' when the dimensions match it.  See :meth:`from_preset`.")
    return classmethod(create)


def _count(iterations) -> int:
    """``iterations`` as an int, if it is an integer (numpy's too); 2.5 or "3" is one TRCError."""
    if not is_integer(iterations):
        raise TRCError(f"iterations must be an integer, got {iterations!r}")
    return int(iterations)


class TinyRecursiveControl(nn.Module):
    """The recursive planner (see the module docstring).

    Args:
        config: a :class:`TRCConfig`; its problem fields are filled in from ``problem``.
        problem: a :class:`~trc.problems.ControlProblem` or a registered name; kept as
            ``model.problem`` and simulated in every refinement iteration.
        network: the trainable parts (:func:`build_network`) when they are shared with other
            problems' planners (:class:`~trc.models.multi_problem.MultiProblemTRC`); None builds its own.

    Attributes:
        config: the resolved config; ``num_iterations`` is its ``K``.
        checkpoint_metadata: training facts of the checkpoint it was loaded from (else ``{}``).
        value_predictor: present when it was loaded from a checkpoint that holds a value head.
    """

    def __init__(self, config: TRCConfig, problem: ControlProblem | str, network: dict[str, nn.Module] | None = None):
        super().__init__()
        self.problem = get_problem(problem) if isinstance(problem, str) else problem
        self.config = cfg = config.resolve(self.problem)
        self.checkpoint_metadata: dict[str, Any] = {}
        self.simulator = None  # None: the problem's own rollout and cost (see simulated_by)
        self.observer = Observer(self.problem, cfg.feedback_points)
        if network is None:
            network = build_network(cfg, self.problem.n_x, self.problem.n_u, self.problem.horizon)
        for name, module in network.items():  # given: shared with other problems (trc.models.multi_problem)
            setattr(self, name, module)

    @property
    def num_iterations(self) -> int:
        """``K``, the refinement iterations the model was configured (and trained) with."""
        return self.config.num_outer_cycles

    # -- the forward pass -----------------------------------------------------------
    def forward(self, x0: Tensor, target: Tensor | None = None, return_all_iterations: bool = False,
                iterations: int | None = None) -> TRCOutput:
        """Plan and refine controls.

        Args:
            x0: start states ``[B, n_x]`` (angles as in :meth:`plan`).
            target: targets ``[B, n_x]`` or ``[n_x]``; defaults to the problem's.
            return_all_iterations: also return every iterate (and, two-level, every cycle's latents).
            iterations: refinement iterations to run instead of ``K`` (any number ``>= 0``).

        Returns:
            A :class:`TRCOutput`; ``controls [B, T, n_u]`` obey ``|u| <= u_max``.
        """
        x0, target = self._inputs(x0, target)
        K = self.num_iterations if iterations is None else _count(iterations)
        if K < 0:
            raise TRCError(f"iterations must be >= 0, got {iterations}")
        cfg = self.config
        z_init, carry = self.start(x0, target)
        last = carry
        Us, zs = [carry.U], [z_init]
        trace: tuple[list, list] | None = ([], []) if return_all_iterations and cfg.use_two_level else None
        best: tuple[Tensor, Tensor, Tensor] | None = None   # (U, its cost, its feedback) past the trained K
        for k in range(K):
            fb = None
            if k >= self.num_iterations:  # past the trained iterations: refine the best plan seen
                carry, best, fb = self._keep_best(carry, best, x0, target)
                Us[-1] = carry.U
            last = self.refine(carry, x0, target, z_init, trace, fb)
            if return_all_iterations:
                Us.append(last.U)
                zs.append(last.z_H)
            carry = last.detach() if cfg.use_gradient_truncation else last
        if best is not None:
            last, best, _ = self._keep_best(last, best, x0, target)
            Us[-1] = last.U
        out = TRCOutput(controls=last.U, final_latent=last.z_H)
        if return_all_iterations:
            out.all_controls = torch.stack(Us, 1)                              # (B, K+1, T, n_u)
            out.all_latents = torch.stack(zs, 1)                               # (B, K+1, d)
            if trace is not None and K > 0:
                out.z_H, out.z_L = torch.stack(trace[0], 1), torch.stack(trace[1], 1)  # (B, K*H, d)
        return out

    def start(self, x0: Tensor, target: Tensor) -> tuple[Tensor, TRCCarry]:
        """Encode the starts and propose ``U_0``: ``z_init [B, d]`` and the carry before iteration 1."""
        z_init = self.encode(x0, target)
        z_init = F.rms_norm(z_init, z_init.shape[-1:])                           # (B, d)
        U0 = self.problem.u_max * torch.tanh(self._decode("initial_decoder", z_init))
        return z_init, TRCCarry(z_init, torch.zeros_like(z_init) if self.config.use_two_level else None, U0)

    def encode(self, x0: Tensor, target: Tensor) -> Tensor:
        """The encoder's latent ``[B, d]`` before its normalization."""
        return self.encoder(self.observer.inputs(x0, target), self.hidden_bias("encoder"), self.adapter("encoder"))

    def hidden_bias(self, part: str) -> Tensor | None:
        """This planner's own bias on the hidden layer of network ``part`` (``"core"``: ``[num_layers,
        hidden]``, one per block), or None: a single-problem model has none
        (:class:`~trc.models.multi_problem.ProblemPlanner` does)."""
        return None

    def adapter(self, part: str):
        """This planner's own low-rank adapter on network ``part`` (an :class:`MLP`'s ``adapter``; ``"core"``:
        one per block), or None: a single-problem model has none (:class:`~trc.models.multi_problem.ProblemPlanner`
        may)."""
        return None

    def _decode(self, part: str, z: Tensor) -> Tensor:
        """Decoder ``part``'s output's first ``T * n_u`` numbers as ``[B, T, n_u]`` (a shared head may emit more)."""
        T, n_u = self.problem.horizon, self.problem.n_u
        return getattr(self, part)(z, self.hidden_bias(part), self.adapter(part))[:, :T * n_u].view(z.shape[0], T, n_u)

    @torch.no_grad()
    def _keep_best(self, carry: TRCCarry, best, x0: Tensor, target: Tensor):
        """Past the trained iterations a refinement is kept only if it lowers the simulated cost.

        Running longer than trained can then never make a plan worse: ``carry.U`` is replaced
        by the cheapest plan seen since iteration ``K`` (its cost read from the same feedback
        the next refinement reads, so this costs one extra simulation, at the end).
        """
        fb = self.feedback(x0, carry.U, target)
        cost = torch.expm1(fb[:, self.problem.n_x])
        if best is not None:
            better = cost < best[1]
            U = torch.where(better[:, None, None], carry.U, best[0])
            fb = torch.where(better[:, None], fb, best[2])
            cost = torch.minimum(cost, best[1])
            carry = TRCCarry(carry.z_H, carry.z_L, U, carry.step, carry.seen, carry.seen_before)
        return carry, (carry.U, cost, fb), fb

    def refine(self, carry: TRCCarry, x0: Tensor, target: Tensor, z_init: Tensor,
               trace: tuple[list, list] | None = None, fb: Tensor | None = None) -> TRCCarry:
        """One refinement iteration: observe ``carry.U``, reason, decode ``U_{k+1}``.

        Args:
            carry: the state after ``carry.step`` iterations.
            x0, target: ``[B, n_x]``.
            z_init: the encoder's latent ``[B, d]``, injected into every low-level update.
            trace: two lists that receive ``z_H`` and ``z_L`` after every cycle, or None.
            fb: the feedback of ``carry.U`` if already simulated (else it is simulated here).

        Returns:
            The next carry (not detached).
        """
        cfg = self.config
        if fb is None:
            with torch.no_grad():
                fb = self.feedback(x0, carry.U, target)                        # (B, n_feedback)
        U_flat = carry.U.flatten(1) / self.problem.u_max                       # (B, T*n_u)
        width = self.context[0].in_features - fb.shape[1]                      # a shared context reads more
        U_flat = F.pad(U_flat, (0, width - U_flat.shape[1]))                   # (B, width), zeros past T
        injection = z_init + self.context(torch.cat([U_flat, fb], -1), self.hidden_bias("context"),
                                          self.adapter("context"))                # (B, d)
        z_H, z_L, bias, adapters = carry.z_H, carry.z_L, self.hidden_bias("core"), self.adapter("core")
        for h in range(cfg.H_cycles):
            truncated = cfg.use_gradient_truncation and h < cfg.H_cycles - 1
            with torch.no_grad() if truncated else nullcontext():
                if z_L is None:  # single latent
                    for _ in range(cfg.L_cycles):
                        z_H = self.core(z_H, injection, bias, adapters)
                else:
                    high = z_H + injection
                    for _ in range(cfg.L_cycles):
                        z_L = self.core(z_L, high, bias, adapters)
                    z_H = self.core(z_H, z_L, bias, adapters)
            if trace is not None:
                trace[0].append(z_H)
                trace[1].append(z_L)
        dU = self.problem.u_max * torch.tanh(self._decode("refine_decoder", z_H))
        U = _ClipSTE.apply(carry.U + dU, self.problem.u_max)                  # (B, T, n_u)
        seen = fb[:, self.problem.n_x].detach()                                # log(1 + cost) of carry.U
        return TRCCarry(z_H, z_L, U, carry.step + 1, seen, seen if carry.seen is None else carry.seen)

    def halting_features(self, carry: TRCCarry) -> Tensor:
        """What the halting head reads after an iteration, ``[B, d + 3]`` (detached).

        The latent ``z_H``, the share of ``K_max`` done, and the simulated cost the iteration
        saw (``log(1 + c_{k-1})``) with its fall over the iteration before,
        ``symlog(1000 (log(1 + c_{k-2}) - log(1 + c_{k-1})))`` (0 after the first iteration).
        """
        fall = symlog(1000 * (carry.seen_before - carry.seen))
        step = torch.full_like(carry.seen, carry.step / self.num_iterations)
        return torch.cat([carry.z_H.detach(), torch.stack([step, carry.seen, fall], -1)], -1)

    def halt_logits(self, carry: TRCCarry) -> Tensor:
        """The halting head's ``(q_halt, q_continue)`` after an iteration, ``[B, 2]``."""
        return self.halt_head(self.halting_features(carry))

    def feedback(self, x0: Tensor, U: Tensor, target: Tensor) -> Tensor:
        """The features of simulating ``U [B, T, n_u]`` from ``x0`` that the model reads (see
        :mod:`trc.models.feedback`), simulated by :attr:`simulator` when set, else by the problem.

        Returns:
            ``[B, n_x + 1 + feedback_points * n_x]``.
        """
        return self.observer(self.simulator or self.problem, x0, U, target)

    @contextmanager
    def simulated_by(self, simulator):
        """Within the block, the feedback simulates with ``simulator`` (a :class:`~trc.simulator.Simulator`
        holding a run's ``dynamics_fn`` and ``cost_params``) instead of the problem; the trainers and
        the evaluator run the model inside it.  None keeps the problem's own."""
        before, self.simulator = self.simulator, simulator
        try:
            yield self
        finally:
            self.simulator = before

    def _inputs(self, x0: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """Validated ``x0 [B, n_x]`` and ``target [B, n_x]`` in the model's dtype and device."""
        n_x = self.problem.n_x
        if not torch.is_tensor(x0):
            raise TRCError(f"start states must be a torch tensor [B, {n_x}], got {type(x0).__name__} "
                           f"(model.plan takes arrays and lists)")
        if x0.dim() != 2 or x0.shape[1] != n_x:
            shape = tuple(x0.shape)
            raise TRCError(f"start states must be a tensor of shape [B, {n_x}], got {shape}")
        if not (x0.is_floating_point() or x0.dtype in (torch.int32, torch.int64, torch.int16, torch.int8,
                                                        torch.uint8)):
            raise TRCError(f"start states must be real numbers, got dtype {x0.dtype}")
        x0 = x0.to(dtype=next(self.parameters()).dtype, device=self.observer._center.device)
        if not torch.isfinite(x0).all():
            raise TRCError("start states must be finite numbers, got NaN or infinity")
        # An angle more than HYSTERESIS beyond its canonical interval (a simulator's raw angle after
        # full turns) is read as the same physical state wrapped; within that band, which a closed
        # loop's hysteresis shows, the state is read as given.
        x0 = self.problem.wrap_state(x0, near=x0, margin=HYSTERESIS)
        if target is not None:
            target = torch.as_tensor(target)
            if target.shape not in ((n_x,), (1, n_x), (x0.shape[0], n_x)):
                raise TRCError(f"targets must have shape [{n_x}] or [{x0.shape[0]}, {n_x}], "
                               f"got {tuple(target.shape)}")
            if not torch.isfinite(target).all():
                raise TRCError("targets must be finite numbers, got NaN or infinity")
        return x0, self.problem.target_like(x0, target)

    # -- inference --------------------------------------------------------------------
    @torch.no_grad()
    def plan(self, x0, target=None, all_iterations: bool = False, iterations: int | None = None,
             halt: bool | str | None = None, return_info: bool = False):
        """Bounded controls for start states; no gradient.

        Args:
            x0: start states ``[B, n_x]`` or one ``[n_x]``; numpy array (or list) or tensor.
                Angles may be raw (a simulator's, after full turns): beyond ``HYSTERESIS`` past
                their canonical interval they are read wrapped, as the same physical state.
            target: ``[B, n_x]`` or ``[n_x]``; defaults to the problem's target.
            all_iterations: return every iterate ``[B, K+1, T, n_u]`` instead of the last
                (runs every iteration).
            iterations: refinement iterations instead of ``K`` (the most a halting run uses).
                Past the trained ``K`` a refinement is kept only where it lowers the cost, with
                halting too.
            halt: stop each start on its own: True uses the model's ``config.halt_rule``, a
                string names a rule of :data:`trc.models.halting.HALT_RULES`, False runs every
                iteration.  Default: True for a model with a halting head, else False.
                Halted starts leave the batch, so the work falls with the iterations used.
            return_info: also return ``info``, a dict with ``iterations``: the iterations each
                start used (``[B]`` ints, ``[]`` for one state; numpy or tensor like ``U``).

        Returns:
            ``U [B, T, n_u]`` (``[T, n_u]`` for one state), numpy if ``x0`` was not a tensor,
            in ``x0``'s floating dtype and device; ``(U, info)`` with ``return_info``.
        """
        as_numpy = not torch.is_tensor(x0)
        if as_numpy:
            try:
                x0 = np.asarray(x0)
            except ValueError:   # a ragged list
                raise TRCError("start states must be a rectangular array [B, n_x] or [n_x]") from None
            if x0.dtype.kind not in "fiu":
                raise TRCError(f"start states must be real numbers, got an array of dtype {x0.dtype}")
        x = torch.as_tensor(x0)
        single = x.dim() == 1
        if target is not None and not torch.is_tensor(target):
            target = np.asarray(target)
            if target.dtype.kind not in "fiu":
                raise TRCError(f"targets must be real numbers, got an array of dtype {target.dtype}")
            target = torch.as_tensor(target)
        xb = x.unsqueeze(0) if single else x
        rule = self._halt_rule(halt)
        if rule is not None and all_iterations:
            raise TRCError("all_iterations runs every iteration; pass halt=False with it")
        if rule is None:
            out = self(xb, target, return_all_iterations=all_iterations, iterations=iterations)
            U = out.all_controls if all_iterations else out.controls
            used = torch.full((xb.shape[0],), self.num_iterations if iterations is None else int(iterations),
                              dtype=torch.long)
        else:
            U, used = self.plan_halting(xb, target, iterations, rule)
        U, used = (U[0], used[0]) if single else (U, used)
        U = U.to(dtype=x.dtype if x.is_floating_point() else U.dtype, device=x.device)
        U = U.numpy() if as_numpy else U
        if not return_info:
            return U
        return U, {"iterations": used.numpy() if as_numpy else used.to(x.device)}

    def _halt_rule(self, halt: bool | str | None) -> str | None:
        """The rule a ``plan(halt=...)`` call uses, or None for every iteration."""
        if halt is None:
            halt = self.config.use_halting
        if halt is False:
            return None
        rule = self.config.halt_rule if halt is True else halt
        if rule in ("halt", "q") and not hasattr(self, "halt_head"):
            raise TRCError(f"halting rule {rule!r} needs a halting head; this model has none "
                           f"(train with --act, or pass halt=False)")
        if rule == "value" and getattr(self, "value_predictor", None) is None:
            raise TRCError("halting rule 'value' needs a value head; this model has none")
        should_halt(rule, torch.zeros(1, 2), torch.zeros(1), torch.zeros(1))  # an unknown rule: one sentence
        return rule

    @torch.no_grad()
    def plan_halting(self, x0: Tensor, target: Tensor | None = None, iterations: int | None = None,
                     rule: str | None = None) -> tuple[Tensor, Tensor]:
        """Refine each start until ``rule`` halts it (at the latest after ``iterations``, default ``K``).

        Halted starts leave the batch: every later iteration computes only the active rows,
        and a halted start's plan is frozen.  Past the trained ``K`` a refinement is kept only
        where it lowers the cost, as in :meth:`forward`.

        Returns:
            ``U [B, T, n_u]`` and the iterations each start used, ``[B]`` long (``>= 1``).
        """
        x0, target = self._inputs(x0, target)
        K = self.num_iterations if iterations is None else _count(iterations)
        if K < 1:
            raise TRCError(f"a halting run needs iterations >= 1, got {iterations}")
        rule = rule or self.config.halt_rule
        value_head = getattr(self, "value_predictor", None) if rule == "value" else None
        z_init, carry = self.start(x0, target)
        U = carry.U.clone()
        used = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        rows = torch.arange(x0.shape[0], device=x0.device)
        value = value_head(z_init) if value_head is not None else None
        best = None   # past the trained K, as in forward: (U, its cost, its feedback), the cheapest plan seen
        for k in range(1, K + 1):
            fb = None
            if k > self.num_iterations:   # refine the cheapest plan seen since iteration K
                carry, best, fb = self._keep_best(carry, best, x0, target)
            carry = self.refine(carry, x0, target, z_init, None, fb)
            if k == K:
                stop = torch.ones_like(rows, dtype=torch.bool)
            elif value_head is not None:
                previous, value = value, value_head(carry.z_H)
                stop = should_halt(rule, value=value, previous_value=previous)
            else:
                stop = should_halt(rule, logits=self.halt_logits(carry))
            if best is None:
                U[rows[stop]] = carry.U[stop]
            else:   # a stopping start keeps its last refinement only where it is cheaper than its best
                U[rows[stop]] = self._keep_best(carry.select(stop), tuple(t[stop] for t in best),
                                                x0[stop], target[stop])[0].U
            used[rows[stop]] = k
            if bool(stop.all()):
                break
            keep = ~stop
            rows, x0, target, z_init, carry = rows[keep], x0[keep], target[keep], z_init[keep], carry.select(keep)
            best = None if best is None else tuple(t[keep] for t in best)
            if value is not None:
                value = value[keep]
        return U, used

    # -- bookkeeping ------------------------------------------------------------------
    def get_parameter_count(self) -> dict[str, int]:
        """Parameters per part and ``total``."""
        counts = {name: sum(p.numel() for p in child.parameters()) for name, child in self.named_children()
                  if name != "observer"}
        counts["total"] = sum(counts.values())
        return counts

    @classmethod
    def from_preset(cls, name: str, problem: ControlProblem | str, **overrides: Any) -> "TinyRecursiveControl":
        """A model from preset ``name`` (one of ``trc.models.config.PRESETS``) for ``problem``.

        ``overrides`` change config fields, for example ``H_cycles=3, L_cycles=4``.
        """
        return cls(preset_config(name, **overrides), problem)

    create_small = _legacy_factory("small")
    create_medium = _legacy_factory("medium")
    create_large = _legacy_factory("large")
    create_two_level_small = _legacy_factory("two_level_small")
    create_two_level_medium = _legacy_factory("two_level_medium")
    create_two_level_large = _legacy_factory("two_level_large")


__all__ = ["PRESETS", "TRCCarry", "TRCConfig", "TRCOutput", "TinyRecursiveControl", "build_network"]
