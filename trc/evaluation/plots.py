"""Reusable figures: the 4-panel refinement figure, phase portraits, control sequences.

Every function draws with matplotlib's object API and touches no pyplot state:
it draws into the ``ax`` or ``fig`` you pass (for example ``plt.subplots()``
in a notebook) or makes a fresh :class:`~matplotlib.figure.Figure`, and returns
it.  :func:`save_figure` writes PNG and SVG atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from trc.evaluation.metrics import analyze_convergence
from trc.errors import TRCError
from trc.io import atomic_write

MODEL_COLOR, BASELINE_COLOR = "C0", "C1"


def save_figure(fig: Figure, path: str | os.PathLike, formats: Sequence[str] = ("png", "svg"),
                dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``path`` with each suffix in ``formats`` (atomically); returns the paths.

    ``path`` ends in one of the formats' suffixes or in none: ``fig.png`` and ``fig`` both write
    ``fig.png`` and ``fig.svg``.

    Raises:
        TRCError: ``path`` is a folder, or ends in another suffix (which would be replaced).
    """
    base = Path(path)
    if base.is_dir():
        raise TRCError(f"the figure's path {str(base)!r} is a folder; give a file name such as "
                       f"{str(base / ('figure.' + formats[0]))!r}")
    if base.suffix and base.suffix.lower().lstrip(".") not in formats:
        raise TRCError(f"the figure's path {str(base)!r} ends in {base.suffix!r}, which would be replaced by "
                       f"{', '.join('.' + f for f in formats)}; end it in one of those, or in no suffix")
    written = []
    for fmt in formats:
        target = base.with_suffix(f".{fmt}")
        atomic_write(target, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=dpi))
        written.append(target)
    return written


def _log_if_wide(ax: Axes, arrays: list[np.ndarray], decades: float = 1.3) -> None:
    """Log y scale when every value is positive and they span more than ``decades``."""
    values = np.concatenate([a.ravel() for a in arrays])
    if values.size and values.min() > 0 and np.log10(values.max() / values.min()) > decades:
        ax.set_yscale("log")


def plot_refinement_curves(metrics, output_path: str | os.PathLike | None = None, baseline=None,
                           title: str | None = None, num_examples: int = 3,
                           fig: Figure | None = None) -> Figure:
    """The seed's 4-panel refinement figure, with an optional baseline beside the model.

    Panels: (1) cost per iteration, mean line, interquartile band and ``num_examples``
    thin sample curves (plus a dotted line at the mean optimal cost when known), log scale
    when the costs span more than a decade or so;
    (2) relative fall of the mean cost per iteration, bars; (3) mean control MSE to the
    expert per iteration; (4) histogram of each sample's total cost reduction
    ``(c_0 - c_K) / c_0`` in %, with a line at zero.  When more iterations were run than a
    model was trained with, panels 1 and 3 mark the trained K with a dashed grey line.

    Args:
        metrics: :class:`trc.evaluation.metrics.RefinementMetrics` of the model.
        output_path: if given, the figure is saved there as PNG and beside it as SVG.
        baseline: metrics of a baseline drawn in a second colour, or None.
        title: figure title; defaults to the problem and each model's λ.
        num_examples: sample curves drawn per model in panel 1 (the first ones).
        fig: figure to draw into (default a new 12 x 8.5 inch one).

    Returns:
        The figure, with four axes in reading order.
    """
    fig = fig if fig is not None else Figure(figsize=(12, 8.5), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    runs = [(metrics, MODEL_COLOR)] + ([(baseline, BASELINE_COLOR)] if baseline is not None else [])
    width = 0.8 / len(runs)
    bins = np.histogram_bin_edges(np.concatenate([100.0 * m.total_reduction for m, _ in runs]), bins=30)
    for j, (m, color) in enumerate(runs):
        c, k, name = m.costs, np.arange(m.costs.shape[1]), m.display_name
        q25, q75 = np.percentile(c, [25, 75], axis=0)
        ax = axes[0]
        ax.fill_between(k, q25, q75, color=color, alpha=0.2, label=f"{name}: interquartile range")
        ax.plot(k, c.mean(axis=0), color=color, lw=2.5, marker="o", label=f"{name}: mean")
        for i in range(min(num_examples, c.shape[0])):
            ax.plot(k, c[i], color=color, lw=0.8, alpha=0.6, label=f"{name}: samples" if i == 0 else None)
        drop = 100.0 * np.array(analyze_convergence(m)["mean_improvement_per_iteration"])
        axes[1].bar(k[1:] + (j - (len(runs) - 1) / 2) * width, drop, width=width, color=color, label=name)
        if m.control_mse is not None:
            axes[2].plot(k, m.control_mse.mean(axis=0), color=color, marker="o", label=name)
        axes[3].hist(100.0 * m.total_reduction, bins=bins, color=color, alpha=0.55, label=name)
    trained = sorted({m.train_iterations for m, _ in runs if m.train_iterations is not None
                      and m.train_iterations < m.num_iterations})
    for ax in (axes[0], axes[2]):
        for j, K in enumerate(trained):
            ax.axvline(K, color="grey", ls="--", lw=1.0, label="trained K" if j == 0 else None)
    if metrics.optimal_costs is not None:
        axes[0].axhline(metrics.optimal_costs.mean(), color="k", ls=":", label="optimum (mean)")
    _log_if_wide(axes[0], [m.costs for m, _ in runs])
    mse = [m.control_mse for m, _ in runs if m.control_mse is not None]
    if mse:
        _log_if_wide(axes[2], [a.mean(axis=0) for a in mse])
    else:
        axes[2].text(0.5, 0.5, "no expert controls in the data", ha="center", va="center",
                     transform=axes[2].transAxes)
    axes[1].axhline(0.0, color="k", lw=0.8)
    axes[3].axvline(0.0, color="k", ls="--", lw=1.0, label="no change")
    labels = [
        ("Cost per iteration", "refinement iteration k", "trajectory cost J (dimensionless)"),
        ("Improvement per iteration", "refinement iteration k", "fall of mean cost (% of previous)"),
        ("Distance to the expert", "refinement iteration k", "control MSE to expert (u²)"),
        ("Total cost reduction per sample", "reduction (c₀ − c_K) / c₀ (%)", "number of samples"),
    ]
    for ax, (head, xlabel, ylabel) in zip(axes, labels):
        ax.set(title=head, xlabel=xlabel, ylabel=ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for ax in axes[:3]:
        ax.xaxis.get_major_locator().set_params(integer=True)
    if title is None:
        title = f"Refinement on {metrics.problem or 'the problem'}: " + " vs ".join(m.display_name for m, _ in runs)
    fig.suptitle(title)
    if output_path is not None:
        save_figure(fig, output_path)
    return fig


def _numpy(a) -> np.ndarray:
    """A float64 numpy copy of an array or tensor (detached, on the CPU)."""
    a = a.detach().cpu() if hasattr(a, "detach") else a
    return np.asarray(a, dtype=np.float64)


def _new_axes(ax: Axes | None, figsize=(5, 4.5)) -> Axes:
    return ax if ax is not None else Figure(figsize=figsize, layout="constrained").subplots()


def plot_phase_portrait(X, ax: Axes | None = None, target: Sequence[float] | None = None,
                        reference=None, label: str = "plan", reference_label: str = "reference",
                        color: str = MODEL_COLOR, state_names: Sequence[str] = ("x₁", "x₂")) -> Axes:
    """Trajectories in the plane of the first two states, with start and target marked.

    Args:
        X: trajectories ``[B, T+1, n_x]`` or ``[T+1, n_x]`` (numpy or torch).
        ax: axes to draw into (default a new figure's).
        target: the target state, drawn as a star.
        reference: trajectories of the same shape drawn dashed in black (the optimum, say).
        label, reference_label: legend entries.
        color: colour of ``X``.
        state_names: axis labels of the two states.

    Returns:
        The axes.
    """
    ax = _new_axes(ax)
    for data, style, name in ((X, dict(color=color, lw=1.5), label),
                              (reference, dict(color="k", ls="--", lw=1.2), reference_label)):
        if data is None:
            continue
        data = _numpy(data)
        data = data[None] if data.ndim == 2 else data
        for i, x in enumerate(data):
            ax.plot(x[:, 0], x[:, 1], label=name if i == 0 else None, **style)
        ax.plot(data[:, 0, 0], data[:, 0, 1], "o", color=style["color"], ms=5)
    if target is not None:
        ax.plot([target[0]], [target[1]], "*", color="crimson", ms=14, label="target")
    ax.set(xlabel=state_names[0], ylabel=state_names[1], title="Phase portrait")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_pendulum_frames(X, dt: float, frames: int = 8, ax: Axes | None = None, color: str = MODEL_COLOR,
                         label: str | None = None) -> Axes:
    """A strip of snapshots of one pendulum trajectory, angle measured from upright.

    Args:
        X: one trajectory ``[T+1, 2]`` (``theta``, ``omega``).
        dt: step length, for the time under each frame.
        frames: snapshots, evenly spaced from the start to the end.
        ax: axes to draw into (default a new, wide figure's).
        color: colour of the rod; label: the strip's title.

    Returns:
        The axes.
    """
    X = _numpy(X)
    ax = _new_axes(ax, figsize=(2 * frames, 2.4))
    steps = np.linspace(0, len(X) - 1, frames).round().astype(int)
    for i, t in enumerate(steps):
        cx, theta = 2.5 * i, X[t, 0]
        ax.plot([cx, cx + np.sin(theta)], [0, np.cos(theta)], color=color, lw=3, solid_capstyle="round")
        ax.plot([cx + np.sin(theta)], [np.cos(theta)], "o", color=color, ms=9)
        ax.plot([cx], [0], "ko", ms=3)
        ax.plot([cx, cx], [0, 1.15], color="crimson", lw=0.8, ls=":")
        ax.text(cx, -1.35, f"t = {t * dt:.1f} s", ha="center", fontsize="small")
    ax.set(xlim=(-1.3, 2.5 * (frames - 1) + 1.3), ylim=(-1.6, 1.3), aspect="equal", title=label or "")
    ax.axis("off")
    return ax


def plot_controls(U, dt: float, ax: Axes | None = None, u_max: float | None = None,
                  reference=None, label: str = "plan", reference_label: str = "reference",
                  color: str = MODEL_COLOR) -> Axes:
    """Control sequences over time as zero-order-hold steps, with the bound dashed.

    Args:
        U: controls ``[B, T, n_u]``, ``[T, n_u]`` or ``[T]`` (numpy or torch); every
            control channel of every sample is drawn.
        dt: sampling time in seconds (the x axis is ``t = k dt``).
        ax: axes to draw into (default a new figure's).
        u_max: the bound, drawn at ``±u_max``.
        reference: controls of the same shape drawn dashed in black.
        label, reference_label: legend entries.
        color: colour of ``U``.

    Returns:
        The axes.
    """
    ax = _new_axes(ax, figsize=(6, 3.5))
    for data, style, name in ((U, dict(color=color, lw=1.5), label),
                              (reference, dict(color="k", ls="--", lw=1.2), reference_label)):
        if data is None:
            continue
        data = _numpy(data)
        data = data[None, :, None] if data.ndim == 1 else data[None] if data.ndim == 2 else data
        t = dt * np.arange(data.shape[1] + 1)
        first = True
        for u in data.transpose(0, 2, 1).reshape(-1, data.shape[1]):
            ax.stairs(u, t, baseline=None, label=name if first else None, **style)
            first = False
    if u_max is not None:
        for s in (-1, 1):
            ax.axhline(s * u_max, color="grey", ls=":", lw=1.0, label="bound" if s > 0 else None)
    ax.set(xlabel="time t (s)", ylabel="control u", title="Controls")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_iterates(X, U, dt: float, axes: Sequence[Axes] | None = None, target: Sequence[float] | None = None,
                  reference_X=None, reference_U=None, u_max: float | None = None,
                  iterations: Sequence[int] | None = None, cmap: str = "viridis") -> tuple[Axes, Axes]:
    """The refinement iterates of one plan, coloured by iteration: phase plane and controls.

    Args:
        X: the iterates' trajectories ``[K+1, T+1, n_x]`` (numpy or torch); ``X[k]`` is iterate ``k``.
        U: their controls ``[K+1, T, n_u]``.
        dt: sampling time in seconds.
        axes: two axes (phase plane, controls); default a new figure's.
        target: the target state, drawn as a star.
        reference_X, reference_U: one trajectory ``[T+1, n_x]`` and its controls ``[T, n_u]``,
            drawn dashed in black as "optimum".
        u_max: the bound, drawn at ``±u_max``.
        iterations: the iterates ``k`` to draw (default all, ``0..K``).
        cmap: colour map from the first iterate to the last.

    Returns:
        The two axes.
    """
    import matplotlib

    X, U = _numpy(X), _numpy(U)
    if axes is None:
        axes = Figure(figsize=(11, 4.5), layout="constrained").subplots(1, 2)
    ax_x, ax_u = axes
    K = X.shape[0] - 1
    ks = list(range(K + 1)) if iterations is None else list(iterations)
    colors = matplotlib.colormaps[cmap]
    for i, k in enumerate(ks):
        color = matplotlib.colors.to_hex(colors(k / max(K, 1)))
        first, last = i == 0, i == len(ks) - 1
        plot_phase_portrait(X[k], ax=ax_x, label=f"k = {k}", color=color, target=target if last else None,
                            reference=reference_X if first else None, reference_label="optimum")
        plot_controls(U[k], dt, ax=ax_u, label=f"k = {k}", color=color, u_max=u_max if last else None,
                      reference=reference_U if first else None, reference_label="optimum")
    ax_x.set_title(f"Phase portrait of the iterates k = {ks[0]}..{ks[-1]}" if len(ks) > 1
                   else f"Phase portrait, iteration k = {ks[0]}")
    ax_u.set_title("Controls of the iterates" if len(ks) > 1 else f"Controls, iteration k = {ks[0]}")
    return ax_x, ax_u


def latent_cycle_steps(z) -> np.ndarray:
    """How far each cycle moves a latent: ``mean_i ||z_ic - z_i,c-1|| / ||z_i,c-1||`` for ``c = 1..C-1``.

    Args:
        z: latents after every cycle ``[B, C, d]`` (tensor or array).

    Returns:
        ``[C-1]`` (the right panel of :func:`plot_latent_cycles`).
    """
    z = _numpy(z)
    step = np.linalg.norm(z[:, 1:] - z[:, :-1], axis=-1) / np.maximum(
        np.linalg.norm(z[:, :-1], axis=-1), np.finfo(float).tiny)               # (B, C-1)
    return step.mean(axis=0)


def plot_latent_cycles(z_H, z_L, H_cycles: int = 1, num_paths: int = 5, fig: Figure | None = None) -> Figure:
    """Two-level latents cycle by cycle: each in its first two principal components, and how far each cycle moves them.

    Args:
        z_H, z_L: the latents after every cycle ``[B, C, d]`` with ``C = K * H_cycles``
            (``TRCOutput.z_H`` and ``z_L`` of a two-level model run with ``return_all_iterations``).
        H_cycles: cycles per refinement iteration; cycle ``c`` (from 0) is labelled
            ``k.h`` with iteration ``k = c // H_cycles + 1`` and cycle ``h = c % H_cycles + 1``.
        num_paths: samples whose path through the cycles is drawn as a line (the first ones).
        fig: figure to draw into (default a new 13 x 4 inch one).

    Returns:
        The figure with three axes: ``z_H`` and ``z_L`` projected on the principal components of
        all their cycles together (one colour per cycle; the paths of ``num_paths`` samples and
        of the mean over samples as lines), and the
        relative step ``mean_i ||z_c - z_{c-1}|| / ||z_{c-1}||`` of both per cycle ``c >= 1``,
        with dotted lines where a new refinement iteration (new simulator feedback) begins.
    """
    import matplotlib

    fig = fig if fig is not None else Figure(figsize=(13, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    zs = {"z_H": _numpy(z_H), "z_L": _numpy(z_L)}
    C = zs["z_H"].shape[1]
    names = [f"{c // H_cycles + 1}.{c % H_cycles + 1}" for c in range(C)]
    colors = matplotlib.colormaps["viridis"]
    for ax, (name, z) in zip(axes[:2], zs.items()):
        flat = z.reshape(-1, z.shape[-1])
        center = flat.mean(axis=0)
        _, s, vt = np.linalg.svd(flat - center, full_matrices=False)
        share = s ** 2 / max(float((s ** 2).sum()), np.finfo(float).tiny)
        proj = (z - center) @ vt[:2].T                                         # (B, C, 2)
        for c in range(C):
            ax.scatter(proj[:, c, 0], proj[:, c, 1], s=8, alpha=0.6, color=colors(c / max(C - 1, 1)),
                       label=f"cycle {names[c]}")
        for i in range(min(num_paths, z.shape[0])):
            ax.plot(proj[i, :, 0], proj[i, :, 1], color="k", lw=0.8, alpha=0.7,
                    label=f"{min(num_paths, z.shape[0])} samples through the cycles" if i == 0 else None)
        mean = proj.mean(axis=0)
        ax.plot(mean[:, 0], mean[:, 1], color="crimson", lw=1.5, marker="x", label="mean over samples")
        ax.set(title=f"{name} per cycle (PCA)", xlabel=f"PC 1 ({share[0]:.0%} of variance)",
               ylabel=f"PC 2 ({share[1]:.0%} of variance)" if share.size > 1 else "PC 2")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", ncol=2 if C > 6 else 1)
    ax = axes[2]
    for (name, z), color in zip(zs.items(), (MODEL_COLOR, BASELINE_COLOR)):
        ax.plot(np.arange(1, C), latent_cycle_steps(z), color=color, marker="o", label=name)
    for c in range(H_cycles, C, H_cycles):
        ax.axvline(c - 0.5, color="grey", ls=":", lw=1.0,
                   label="new iteration (feedback)" if c == H_cycles else None)
    ax.set_xticks(range(1, C), names[1:])
    ax.set(title="How far each cycle moves the latent", xlabel="cycle (iteration.cycle)",
           ylabel=r"relative step $\|z_c - z_{c-1}\| \,/\, \|z_{c-1}\|$", xlim=(0.5, max(C - 0.5, 1.5)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return fig
