"""Adaptive halting: targets, the halting run, plan(halt, return_info), deep supervision, old checkpoints."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from trc.cli import main
from trc.data.datasets import generate_dataset, make_loader, save_dataset
from trc.evaluation.refinement_evaluator import RefinementEvaluator
from trc.errors import TRCError
from trc.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from trc.models.config import TRCConfig
from trc.models.halting import continue_targets, halting_loss, should_halt, stop_targets
from trc.models.tiny_recursive_control import TinyRecursiveControl
from trc.models.value_predictor import create_value_predictor
from trc.problems import get_problem
from trc.training.deep_supervision import DeepSupervisionObjective
from trc.training.process_supervision import compute_process_supervision_loss

TINY = dict(latent_dim=16, hidden_dim=32, feedback_points=4, use_gradient_truncation=True)


def tiny(problem="double_integrator", seed=0, **overrides) -> TinyRecursiveControl:
    torch.manual_seed(seed)
    return TinyRecursiveControl(TRCConfig(**{**TINY, **overrides}), problem)


def starts(model, n=6, seed=1):
    return model.problem.sample_initial_states(n, torch.Generator().manual_seed(seed))


# -- targets on hand-made cost sequences ----------------------------------------------
def test_stop_targets_stop_once_no_later_iterate_wins_more_than_the_tolerance():
    costs = torch.tensor([[10.0, 5.0, 5.004, 4.0, 4.003],     # a plateau, then a real improvement
                          [10.0, 9.0, 8.995, 8.992, 9.5],      # converged (within 0.1 %), then worse
                          [1.0, 2.0, 3.0, 4.0, 5.0]])          # the first plan is the best
    expected = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.float32)
    assert torch.equal(stop_targets(costs, tol=1e-3), expected)
    # a zero tolerance asks for the exact minimum of the rest of the run
    assert torch.equal(stop_targets(costs, tol=0.0)[1], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))


def test_continue_targets_bootstrap_from_the_next_prediction_with_a_discount():
    logits = torch.tensor([[[-9.0, 0.0], [0.0, 9.0], [9.0, -9.0]]])   # (B=1, K+1=3, 2)
    target = continue_targets(logits, gamma=0.5)
    s = torch.sigmoid
    expected = 0.5 * torch.stack([s(torch.tensor(9.0)),               # max(halt, continue) one step on
                                  s(torch.tensor(9.0))])               # the last iterate: only halting
    assert torch.allclose(target[0], expected)
    assert target.shape == (1, 2)
    assert halting_loss(logits, torch.tensor([[4.0, 3.0, 2.0, 1.0]])).item() > 0


def test_rules_decide_from_their_signals():
    logits = torch.tensor([[1.0, 2.0], [-1.0, -2.0], [0.5, 0.0]])
    assert should_halt("halt", logits).tolist() == [True, False, True]
    assert should_halt("q", logits).tolist() == [False, True, True]
    v = torch.tensor([1.0, 1.0, 1.0])
    assert should_halt("value", value=v, previous_value=v + torch.tensor([0.5, 1e-4, 0.0])).tolist() == \
        [False, True, True]
    with pytest.raises(TRCError, match="unknown halting rule"):
        should_halt("never", logits)


# -- the halting run ---------------------------------------------------------------
def test_halted_starts_leave_the_batch_and_their_plans_freeze(monkeypatch):
    model = tiny(num_outer_cycles=5, use_halting=True).eval()
    x0 = starts(model)
    stop_at = torch.tensor([1, 3, 5, 2, 3, 1])     # iteration at which each start halts
    rows_seen, step = [], {"k": 0}

    class FakeHead(torch.nn.Module):
        def forward(self, z):
            return fake_head(z)

    def fake_head(z):  # halts start i after iteration stop_at[i]; the rows arrive in order
        step["k"] += 1
        active = torch.nonzero(stop_at >= step["k"]).flatten()
        rows_seen.append(len(z))
        assert len(z) == len(active)
        halt = (stop_at[active] == step["k"]).float() * 2 - 1
        return torch.stack([halt, torch.zeros_like(halt)], -1)

    monkeypatch.setattr(model, "halt_head", FakeHead())
    calls = []
    refine = model.refine
    monkeypatch.setattr(model, "refine", lambda carry, *a, **k: calls.append(len(carry.U)) or refine(carry, *a, **k))
    U, info = model.plan(x0, return_info=True)
    assert info["iterations"].tolist() == stop_at.tolist()
    assert calls == [6, 4, 3, 1, 1]                  # computed only on the active rows
    with torch.no_grad():
        for i, k in enumerate(stop_at.tolist()):    # each plan is the one after its own iterations
            assert torch.allclose(U[i], model(x0[i:i + 1], iterations=k).controls[0], atol=1e-6)


def test_plan_with_return_info_and_halt_false():
    """A halting model halts by default; ``halt=False`` runs all K iterations all the same."""
    model = tiny(num_outer_cycles=4, use_halting=True).eval()
    with torch.no_grad():
        model.halt_head.net[-1].bias.copy_(torch.tensor([10.0, -10.0]))   # halt after the first iteration
    x0 = starts(model).numpy()
    U, info = model.plan(x0, return_info=True)
    assert U.shape == (6, 15, 1) and info["iterations"].shape == (6,)
    assert info["iterations"].dtype == np.int64 and (info["iterations"] == 1).all()
    U_all, info_all = model.plan(x0, halt=False, return_info=True)
    assert (info_all["iterations"] == 4).all()
    np.testing.assert_allclose(U_all, model.plan(x0, halt=False))
    with torch.no_grad():
        full, first = (model(torch.as_tensor(x0), iterations=k).controls.numpy() for k in (4, 1))
    np.testing.assert_allclose(U_all, full, atol=1e-6)                  # the plan after all K iterations
    np.testing.assert_allclose(U, first, atol=1e-6)                     # the plan after the first
    assert np.abs(U_all - U).max() > 1e-4                               # and the two differ
    one, info_one = model.plan(x0[0], return_info=True)
    assert one.shape == (15, 1) and info_one["iterations"].shape == ()
    Ut, info_t = model.plan(torch.as_tensor(x0), return_info=True)
    assert torch.is_tensor(info_t["iterations"])
    with pytest.raises(TRCError, match="needs a value head"):
        model.plan(x0, halt="value")
    with pytest.raises(TRCError, match="all_iterations"):
        model.plan(x0, all_iterations=True)


def test_running_past_the_trained_iterations_never_raises_the_cost():
    model = tiny("vanderpol", num_outer_cycles=2).eval()
    x0 = starts(model, 32)
    with torch.no_grad():
        out = model(x0, return_all_iterations=True, iterations=6)
    costs = model.problem.evaluate(x0.repeat_interleave(7, 0), out.all_controls.flatten(0, 1))["cost"].view(32, 7)
    assert (costs[:, 3:] <= costs[:, 2:3] * (1 + 1e-5)).all()            # never above iterate K = 2
    assert (costs[:, 3:].diff(dim=1) <= 1e-4 * costs[:, 3:-1]).all()       # and never rising after it
    assert torch.equal(out.controls, out.all_controls[:, -1])



def test_a_halting_run_past_the_trained_iterations_never_raises_the_cost_either():
    model = tiny("vanderpol", num_outer_cycles=2, use_halting=True).eval()   # K_max = 2; the head halts nowhere
    x0 = starts(model, 32)
    halting, info = model.plan(x0, iterations=6, return_info=True)
    assert (info["iterations"] == 6).all() and torch.equal(halting, model.plan(x0, iterations=6, halt=False))
    trained = model.problem.evaluate(x0, model.plan(x0, halt=False))["cost"]
    assert (model.problem.evaluate(x0, halting)["cost"] <= trained * (1 + 1e-5)).all()
    with torch.no_grad():   # a head that halts some starts early, some past K, most at the end
        torch.manual_seed(3)
        model.halt_head.net[-1].weight.normal_(0, 1.0)
        model.halt_head.net[-1].bias.copy_(torch.tensor([-1.0, 0.0]))
    U, info = model.plan(x0, iterations=6, return_info=True)
    used = info["iterations"]
    assert ((used > 2) & (used < 6)).any() and (used == 6).any()
    ran = used >= 2   # a start that ran the trained K: past it, nothing made its plan dearer
    assert (model.problem.evaluate(x0, U)["cost"][ran] <= trained[ran] * (1 + 1e-5)).all()


# -- deep supervision ------------------------------------------------------------------
def batch_of(problem, n=8):
    data = generate_dataset(problem, n, seed=0)
    return next(iter(make_loader(data, n, shuffle=False)))


@pytest.mark.parametrize("process_weight", [0.0, 1.0])
def test_deep_supervision_gradients_equal_the_whole_run_loss(process_weight):
    model = tiny("vanderpol", num_outer_cycles=3).train()
    model.problem = get_problem("vanderpol")
    batch = batch_of(model.problem)
    objective = DeepSupervisionObjective(model.problem, process_weight, "monotone")
    loss, parts = objective(model, batch)
    loss.backward()
    streamed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    out = model(batch["initial_states"], batch["target_states"], return_all_iterations=True)
    whole, _ = compute_process_supervision_loss(model.problem, out.all_controls, batch["control_sequences"],
                                                batch["initial_states"], batch["target_states"], process_weight,
                                                variant="monotone")
    whole.backward()
    assert torch.allclose(loss, whole, rtol=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(streamed[name], p.grad, rtol=1e-4, atol=1e-7), name


class SavedBytes:
    """Bytes saved for backward that are alive, and their peak (saved_tensors_hooks)."""

    def __init__(self):
        self.alive = self.peak = 0

    def pack(self, t):
        counter, n = self, t.numel() * t.element_size()

        class Held:
            def __del__(self):
                counter.alive -= n
        self.alive += n
        self.peak = max(self.peak, self.alive)
        held = Held()
        held.t = t
        return held

    def unpack(self, held):
        return held.t


def peak_saved(model, objective, batch) -> int:
    counter = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
        loss, _ = objective(model, batch)
        loss.backward()
    return counter.peak


def test_deep_supervision_memory_does_not_grow_with_k_max():
    problem = get_problem("vanderpol", horizon=20)
    batch = batch_of(problem, 16)
    deep, whole = {}, {}
    for K in (2, 8):
        model = tiny(problem, num_outer_cycles=K, use_halting=True).train()
        model.value_predictor = create_value_predictor(16)
        deep[K] = peak_saved(model, DeepSupervisionObjective(problem, 1.0), batch)
        from trc.training.supervised_trainer import ProcessSupervisionObjective
        whole[K] = peak_saved(model, ProcessSupervisionObjective(problem, 1.0), batch)
    assert deep[8] < 1.1 * deep[2]              # constant: one iteration's graph at a time
    assert whole[8] > 2.5 * whole[2]            # the measure sees the whole-run graph grow


# -- checkpoints and the command line -------------------------------------------------
def test_old_checkpoints_without_a_halting_head_load_and_plan(tmp_path):
    model = tiny("vanderpol", num_outer_cycles=2).eval()
    path = save_checkpoint(model, tmp_path / "old.pt")
    ckpt = read_checkpoint(path)
    for key in ("use_halting", "halt_rule"):   # written before halting existed
        del ckpt["config"][key]
    torch.save(ckpt, path)
    loaded = load_checkpoint(path)
    x0 = starts(loaded).numpy()
    U, info = loaded.plan(x0, return_info=True)
    np.testing.assert_allclose(U, model.plan(x0), atol=1e-6)
    assert (info["iterations"] == 2).all()
    with pytest.raises(TRCError, match="needs a halting head"):
        loaded.plan(x0, halt=True)


def test_halting_head_round_trips(tmp_path):
    model = tiny("vanderpol", num_outer_cycles=3, use_halting=True, halt_rule="q").eval()
    with torch.no_grad():
        model.halt_head.net[-1].bias.copy_(torch.tensor([1.0, 0.0]))   # halt after the first iteration
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    x0 = starts(loaded).numpy()
    U, info = loaded.plan(x0, return_info=True)
    assert loaded.config.halt_rule == "q" and (info["iterations"] == 1).all()
    np.testing.assert_allclose(U, model.plan(x0, iterations=1, halt=False), atol=1e-6)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "vdp.npz"
    save_dataset(path, generate_dataset(get_problem("vanderpol", horizon=10), 16, seed=0))
    return str(path)


def test_trc_train_act_writes_a_halting_model(data, tmp_path, capsys):
    argv = ["train", "--data", data, "--output_dir", str(tmp_path), "--epochs", "1", "--batch_size", "8",
            "--quiet", "--act", "--max_iterations", "3", "--use_value_predictor"]
    assert main(argv) == 0
    assert "iterations per start" in capsys.readouterr().out
    model = load_checkpoint(tmp_path / "best_model.pt")
    assert model.config.use_halting and model.num_iterations == 3
    assert model.checkpoint_metadata["halt_tolerance"] == 1e-3
    U, info = model.plan(np.zeros((2, 2), np.float32), return_info=True)
    assert U.shape == (2, 10, 1) and info["iterations"].max() <= 3


def test_heads_only_trains_the_halting_head_of_a_fixed_planner(data, tmp_path):
    planner = tmp_path / "planner"
    base = ["train", "--data", data, "--epochs", "1", "--batch_size", "8", "--quiet"]
    assert main([*base, "--output_dir", str(planner), "--model_size", "medium"]) == 0
    act = tmp_path / "act"   # no --model_size: the planner's preset, not the default
    assert main([*base, "--output_dir", str(act), "--epochs", "2", "--act", "--max_iterations", "3",
                 "--use_value_predictor", "--init_from", str(planner / "best_model.pt"), "--heads_only"]) == 0
    before = read_checkpoint(planner / "best_model.pt")["state_dict"]
    after = read_checkpoint(act / "best_model.pt")["state_dict"]
    heads = [k for k in after if k.startswith(("halt_head.", "value_predictor."))]
    assert heads and all(torch.equal(before[k], after[k]) for k in before)       # the planner is kept
    assert not torch.equal(after["halt_head.net.2.bias"], torch.tensor([-2.0, 2.0]))  # the head learned
    history = load_checkpoint(act / "last_model.pt").checkpoint_metadata
    assert history["settings"]["heads_only"] is True and history["settings"]["model_size"] == "medium"


def test_a_heads_only_run_records_its_planners_lambda_not_its_own_unused_flags(data, tmp_path):
    """``trc analyze`` labels a model with its λ: a heads-only run's is its planner's, which it does not train."""
    base = ["train", "--data", data, "--epochs", "1", "--batch_size", "8", "--quiet"]
    assert main([*base, "--output_dir", str(tmp_path / "planner"), "--process_weight", "0.3",
                 "--loss_variant", "ratio"]) == 0
    assert main([*base, "--output_dir", str(tmp_path / "act"), "--act", "--max_iterations", "3", "--heads_only",
                 "--init_from", str(tmp_path / "planner" / "best_model.pt")]) == 0
    meta = load_checkpoint(tmp_path / "act" / "best_model.pt").checkpoint_metadata
    assert (meta["process_weight"], meta["variant"], meta["final_only"]) == (0.3, "ratio", False)
    model = load_checkpoint(tmp_path / "act" / "best_model.pt")
    batch = generate_dataset(model.problem, 4, "lqr", seed=1)
    assert RefinementEvaluator(model, label="act").evaluate(batch).display_name == "act (λ = 0.3)"


@pytest.mark.parametrize("planner_flags, act_flags, message", [
    (["--use_two_level"], [], "is a two-level model; pass --use_two_level"),
    ([], ["--use_two_level"], "is a single-latent model; leave out --use_two_level"),
    (["--L_cycles", "2"], [], "was built with --L_cycles 2, this run with 3; pass --L_cycles 2"),
])
def test_init_from_refuses_a_planner_of_another_architecture_with_equal_shapes(
        data, tmp_path, capsys, planner_flags, act_flags, message):
    """Single-latent and two-level models (and other cycle counts) have weights of equal shapes: the
    flags that differ are named, not the weights loaded into a model that computes otherwise."""
    base = ["train", "--data", data, "--epochs", "1", "--batch_size", "8", "--quiet"]
    assert main([*base, "--output_dir", str(tmp_path / "planner"), *planner_flags]) == 0
    capsys.readouterr()
    act = tmp_path / "act"
    assert main([*base, "--output_dir", str(act), "--act", "--init_from", str(tmp_path / "planner" / "best_model.pt"),
                 "--heads_only", *act_flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (act / "best_model.pt").exists()


def test_heads_only_objective_matches_the_halting_loss_of_the_run():
    torch.manual_seed(0)
    model = tiny("vanderpol", num_outer_cycles=3, use_halting=True)
    from trc.training.deep_supervision import freeze_planner, trains_planner

    assert trains_planner(model)
    freeze_planner(model)
    assert not trains_planner(model) and all(p.requires_grad for p in model.halt_head.parameters())
    problem = model.problem
    x0 = starts(model, 5)
    batch = {"initial_states": x0, "target_states": problem.target_like(x0),
             "control_sequences": torch.zeros(5, problem.horizon, 1)}
    objective = DeepSupervisionObjective(problem, 1.0, "ratio", tol=1e-3)
    loss, parts = objective(model, batch)
    with torch.no_grad():
        out = model(x0, return_all_iterations=True)
        costs = problem.evaluate(x0.expand(4, -1, -1).transpose(0, 1).reshape(-1, 2),
                                 out.all_controls.reshape(-1, problem.horizon, 1))["cost"].view(5, 4)
    assert torch.allclose(parts["iteration_costs"], costs.mean(0), rtol=1e-4)
    loss.backward()
    assert model.halt_head.net[-1].weight.grad.abs().sum() > 0
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("halt_head."))


@pytest.mark.parametrize("flags, message", [
    (["--max_iterations", "4"], "need --act"),
    (["--heads_only", "--act"], "--heads_only needs --init_from"),
    (["--heads_only", "--init_from", "x.pt"], "--heads_only trains a halting head: it needs --act"),
    (["--act", "--max_iterations", "0"], "--max_iterations must be >= 2"),
    (["--act", "--max_iterations", "1"], "--max_iterations must be >= 2"),
    (["--act", "--loss_variant", "seed"], "--act trains the 'ratio' or 'monotone'"),
])
def test_bad_halting_flags_are_one_line(data, tmp_path, capsys, flags, message):
    argv = ["train", "--data", data, "--output_dir", str(tmp_path), "--epochs", "1", "--quiet", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_evaluator_and_table_report_halting():
    from trc.evaluation.metrics import format_table, summarize
    from trc.evaluation.refinement_evaluator import RefinementEvaluator

    model = tiny("vanderpol", num_outer_cycles=3, use_halting=True).eval()
    with torch.no_grad():   # halts where the latent's first entry is positive, else runs on
        model.halt_head.net[0].weight.zero_()
        model.halt_head.net[0].weight[0, 0] = 1.0
        model.halt_head.net[0].bias.zero_()
        model.halt_head.net[-1].weight.zero_()
        model.halt_head.net[-1].weight[0, 0] = 50.0
        model.halt_head.net[-1].bias.copy_(torch.tensor([-1.0, 0.0]))
    data = generate_dataset(model.problem, 40, seed=0)
    metrics = RefinementEvaluator(model).evaluate(data)
    used = model.plan(data["initial_states"], return_info=True)[1]["iterations"]
    np.testing.assert_array_equal(metrics.halt_iterations, used)
    assert 1 < used.mean() < 3            # some starts halt early, some run all 3
    s = summarize(metrics)
    assert s["mean_iterations"] == pytest.approx(used.mean())
    assert s["halting_histogram"] == np.bincount(used, minlength=4)[1:].tolist()
    full = metrics.costs[:, -1]
    halted = np.where(used == 3, full, metrics.costs[np.arange(40), used])
    assert s["cost_at_halting_over_full"] == pytest.approx(halted.mean() / full.mean(), rel=1e-6)
    table = format_table({"act": s})
    assert "iterations at halting" in table and "halted after k=1" in table
    no_halting = summarize(RefinementEvaluator(tiny("vanderpol", num_outer_cycles=3)).evaluate(data))
    assert no_halting["mean_iterations"] is None and "-" in format_table({"m": no_halting})


def test_a_heads_only_run_resumes_without_the_planner_file_it_started_from(data, tmp_path):
    base = ["train", "--data", data, "--batch_size", "8", "--quiet"]
    assert main([*base, "--output_dir", str(tmp_path / "planner"), "--epochs", "1", "--model_size", "medium"]) == 0
    act = ["--output_dir", str(tmp_path / "act"), "--act", "--max_iterations", "3", "--heads_only",
           "--init_from", str(tmp_path / "planner" / "best_model.pt")]
    assert main([*base, *act, "--epochs", "1"]) == 0
    ref = tmp_path / "ref"
    assert main([*base, *act[2:], "--output_dir", str(ref), "--epochs", "2"]) == 0
    shutil.rmtree(tmp_path / "planner")                  # its weights are in the run's checkpoints now
    assert main([*base, *act, "--epochs", "2", "--resume"]) == 0
    a, b = (read_checkpoint(d / "last_model.pt")["state_dict"] for d in (tmp_path / "act", ref))
    assert all(torch.equal(a[k], b[k]) for k in a)
