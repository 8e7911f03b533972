"""The seed's baseline: behavior cloning of the final controls only (``final_only``, ``trc train --baseline``)."""

from __future__ import annotations

import pytest
import torch

from trc import get_problem
from trc.cli import main
from trc.data.datasets import generate_dataset, make_loader, save_dataset
from trc.errors import TRCError
from trc.models.checkpoint import load_checkpoint
from trc.training.process_supervision import compute_process_supervision_loss
from trc.training.supervised_trainer import train_behavior_cloning
from trc.training.train import build_model

T = 10


@pytest.fixture(scope="module")
def problem():
    return get_problem("vanderpol", horizon=T)


def case(problem, B=6, K=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    all_U = (torch.rand(B, K + 1, T, 1, generator=g) - 0.5).requires_grad_(True)
    expert = torch.rand(B, T, 1, generator=g) - 0.5
    x0 = problem.sample_initial_states(B, g)
    return all_U, expert, x0, problem.target_like(x0)


def test_final_only_imitates_the_last_iterate_and_its_gradient_reaches_nothing_else(problem):
    all_U, expert, x0, target = case(problem)
    every, _ = compute_process_supervision_loss(problem, all_U, expert, x0, target, 0.0)
    final, parts = compute_process_supervision_loss(problem, all_U, expert, x0, target, 0.0, final_only=True)
    assert final.item() == pytest.approx(((all_U[:, -1] - expert) ** 2).mean().item())
    assert final.item() != pytest.approx(every.item(), rel=1e-3)
    (grad_final,) = torch.autograd.grad(final, all_U)
    (grad_every,) = torch.autograd.grad(every, all_U)
    assert torch.all(grad_final[:, :-1] == 0) and grad_final[:, -1].abs().sum() > 0
    assert all(grad_every[:, k].abs().sum() > 0 for k in range(all_U.shape[1]))
    assert parts["iteration_costs"].shape == (3,)  # the costs are still reported


def test_final_only_needs_process_weight_zero(problem):
    all_U, expert, x0, target = case(problem)
    with pytest.raises(TRCError, match="final_only .* needs process_weight 0"):
        compute_process_supervision_loss(problem, all_U, expert, x0, target, 1.0, final_only=True)


def test_final_only_training_leaves_the_first_guess_untrained_under_truncation(problem):
    """With gradient truncation the carry is detached between iterations: imitating U_K alone
    cannot reach the initial decoder, imitating every iterate does."""
    loader = make_loader(generate_dataset(problem, 16, seed=2), 8, seed=0)
    decoders = {}
    for final_only in (False, True):
        torch.manual_seed(0)
        model = build_model(problem, iterations=2)
        before = [p.detach().clone() for p in model.initial_decoder.parameters()]
        model = train_behavior_cloning(model, loader, epochs=1, final_only=final_only, progress=False)
        decoders[final_only] = all(torch.equal(a, b) for a, b in zip(before, model.initial_decoder.parameters()))
    assert decoders == {False: False, True: True}


def test_trc_train_baseline_records_it_and_trains_the_seeds_way(problem, tmp_path, capsys):
    data = tmp_path / "d.npz"
    save_dataset(data, generate_dataset(problem, 24, seed=0))
    common = ["train", "--data", str(data), "--epochs", "1", "--batch_size", "8", "--quiet"]
    assert main([*common, "--output_dir", str(tmp_path / "seed"), "--baseline"]) == 0
    model = load_checkpoint(tmp_path / "seed" / "best_model.pt")
    meta = model.checkpoint_metadata
    assert meta["final_only"] is True and meta["process_weight"] == 0.0 and meta["settings"]["baseline"] is True
    assert not model.config.use_gradient_truncation  # the 'small' preset's own: through every iteration
    assert main([*common, "--output_dir", str(tmp_path / "bc"), "--process_weight", "0"]) == 0
    bc = load_checkpoint(tmp_path / "bc" / "best_model.pt")
    assert bc.checkpoint_metadata["final_only"] is False and bc.config.use_gradient_truncation
    # resume knows which it was
    capsys.readouterr()
    assert main([*common, "--output_dir", str(tmp_path / "seed"), "--resume", "--process_weight", "0"]) == 2
    assert "--baseline True, not False" in capsys.readouterr().err
    assert main([*common, "--output_dir", str(tmp_path / "seed"), "--resume", "--baseline"]) == 0
    assert main([*common, "--output_dir", str(tmp_path / "x"), "--baseline", "--process_weight", "0.5"]) == 2
    assert "--baseline is behavior cloning" in capsys.readouterr().err
