"""Self-play and curriculum: the archive keeps only cheaper plans, the schedules, a short run learns."""

import math

import pytest
import torch

from trc import get_problem
from trc.data.datasets import generate_dataset, make_loader
from trc.errors import TRCError
from trc.training.curriculum import Curriculum, difficulty
from trc.training.selfplay import (PlanArchive, SelfPlayConfig, SelfPlayData, join, nearest, plans_of, smooth_noise,
                                    stitched, tails)
from trc.training.train import build_model

HORIZON = 20


@pytest.fixture(scope="module")
def problem():
    return get_problem("vanderpol_constrained", horizon=HORIZON)


@pytest.fixture(scope="module")
def data(problem):
    return generate_dataset(problem, 48, seed=0)


def test_archive_only_ever_replaces_a_plan_by_a_cheaper_one(problem, data):
    x0 = torch.as_tensor(data["initial_states"])
    archive = PlanArchive(problem, x0, problem.target_like(x0), torch.as_tensor(data["control_sequences"]))
    g = torch.Generator().manual_seed(0)
    replaced = 0
    for _ in range(20):
        before_U, before_cost = archive.U.clone(), archive.cost.clone()
        idx = torch.randint(len(archive), (100,), generator=g)  # repeated starts compete among themselves
        candidates = archive.U[idx] + 0.5 * smooth_noise((100, HORIZON, 1), 5, g)
        n = archive.offer(candidates, idx)
        changed = (archive.U != before_U).any(-1).any(-1)
        assert int(changed.sum()) == n
        assert (archive.cost <= before_cost).all() and (archive.cost[changed] < before_cost[changed]).all()
        assert torch.equal(archive.U[~changed], before_U[~changed])
        replaced += n
    assert replaced > 0                               # the test did exercise replacements
    assert archive.U.abs().max() <= problem.u_max     # stored plans are clipped
    again = problem.evaluate(archive.x0, archive.U, archive.target)["cost"]
    torch.testing.assert_close(archive.cost, again)   # costs are the re-simulated ones
    assert archive.offer(archive.U + 0.0) == 0        # the same plans replace nothing


def test_curriculum_schedule():
    c = Curriculum(box_start=0.2, horizon_start=0.25, ramp=0.5)
    assert c.box_scale(0, 100) == pytest.approx(0.2) and c.box_scale(25, 100) == pytest.approx(0.6)
    assert c.box_scale(50, 100) == 1.0 and c.box_scale(99, 100) == 1.0
    assert [c.horizon(e, 100, 100) for e in (0, 25, 50, 80)] == [25, 63, 100, 100]
    scales = [c.box_scale(e, 100) for e in range(100)]
    assert all(a <= b for a, b in zip(scales, scales[1:]))
    assert not Curriculum().active and Curriculum().horizon(0, 10, 100) == 100
    with pytest.raises(TRCError, match="box_start"):
        Curriculum(box_start=0)


def test_curriculum_draws_near_starts_first(problem, data):
    c = Curriculum(box_start=0.3)
    loader = SelfPlayData(problem, data, 8, None, c, epochs=10)
    d = difficulty(problem, loader.archive.x0)
    early = torch.cat([b["initial_states"] for b in loader])
    assert difficulty(problem, early).max() <= max(0.3, d.sort().values[7]) + 1e-6
    loader.epoch = 9
    late = torch.cat([b["initial_states"] for b in loader])
    assert difficulty(problem, late).max() > 0.5


def test_selfplay_data_batches_and_fresh_starts(problem, data):
    loader = SelfPlayData(problem, data, 16, SelfPlayConfig(fresh_starts=32, explore=2), seed=0)
    assert len(loader.archive) == 48 + 32 and len(loader) == 3
    batch = next(iter(loader))
    assert set(batch) == {"initial_states", "target_states", "control_sequences", "costs"}
    assert batch["control_sequences"].shape == (16, HORIZON, 1)
    with pytest.raises(TRCError, match="explore"):
        SelfPlayConfig(explore=-1)


def _self_play_run(problem, data, train):
    """Four refreshes of the same archive, with the model trained in between or left untrained.

    Returns the loader and, per refresh, ``(archive cost before, archive cost after, cost of the
    model's cheapest iterate)`` per start, the model's costs taken right after the refresh.
    """
    from trc.training.supervised_trainer import train_with_process_supervision

    torch.manual_seed(0)
    model = build_model(problem)
    loader = SelfPlayData(problem, data, 16, SelfPlayConfig(fresh_starts=16, explore=4), seed=0, epochs=4)
    seen, before = [], [loader.archive.cost.clone()]

    def look(epoch):  # runs right after the refresh: the model is the one that was refreshed with
        a = loader.archive
        plans = plans_of(model, a.x0, a.target)
        idx = torch.arange(len(a))
        model_cost = torch.stack([a.simulate(problem.clip(plans[:, k]), idx) for k in range(plans.shape[1])]).amin(0)
        seen.append((before[-1], a.cost.clone(), model_cost))
        before.append(a.cost.clone())

    if train:
        train_with_process_supervision(model, loader, make_loader(data, 48, shuffle=False), epochs=4, lr=3e-3,
                                       variant="ratio", progress=False, hooks={"on_epoch_start": look})
    else:
        for epoch in range(4):
            loader.refresh(model, epoch)
            look(epoch)
    return loader, seen


def test_short_self_play_run_lowers_the_cost(problem, data):
    """The model's own plans reach the archive, and learning finds clearly more cheaper plans than noise."""
    loader, seen = _self_play_run(problem, data, train=True)
    idle, _ = _self_play_run(problem, data, train=False)
    start = seen[0][0]
    assert len(loader.log) == 4
    assert (loader.archive.cost <= start).all() and loader.archive.cost.mean() < start.mean()
    beaten = 0
    for before, after, model_cost in seen:
        assert (after <= model_cost).all()           # every iterate of the model was offered
        beaten += int((model_cost < before).sum())
    assert beaten > 0                                # and the model's own plans did beat the archive
    # exploration alone also finds a few cheaper plans: the learning model must find clearly more
    assert loader.archive.improved >= idle.archive.improved + 10
    assert start.mean() - loader.archive.cost.mean() > 10 * (start.mean() - idle.archive.cost.mean())


def test_selfplay_state_round_trips(problem, data):
    a = SelfPlayData(problem, data, 16, SelfPlayConfig(fresh_starts=8, explore=2), seed=0)
    a.refresh(build_model(problem), 0)
    b = SelfPlayData(problem, data, 16, SelfPlayConfig(fresh_starts=8, explore=2), seed=5)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.archive.U, b.archive.U) and torch.equal(a.archive.cost, b.archive.cost)
    assert math.isclose(a.log[0]["mean_cost"], b.log[0]["mean_cost"])


class _Marker(torch.nn.Module):
    """A stand-in planner whose plan tells where it planned from: ``U[t] = 100 + x_0 + t``."""

    def forward(self, x0, target, return_all_iterations=False):
        T = HORIZON
        U = (100.0 + x0[:, :1, None] + torch.arange(T, dtype=x0.dtype)[None, :, None])    # (b, T, 1)
        return type("Out", (), {"all_controls": U[:, None], "controls": U})()


def test_join_splices_two_plans():
    first = torch.arange(5.0)[None, :, None].repeat(2, 1, 1)            # 0 1 2 3 4
    second = -torch.arange(1.0, 6.0)[None, :, None].repeat(2, 1, 1)     # -1 -2 -3 -4 -5
    out = join(first, second, torch.tensor([2, 5]), offset=torch.tensor([1, 0]))
    assert out[0, :, 0].tolist() == [1, 2, -1, -2, -3]
    assert out[1, :, 0].tolist() == [0, 1, 2, 3, 4]


def test_stitched_candidate_is_the_archive_prefix_then_the_model_plan_from_where_it_leads(problem, data):
    x0 = torch.as_tensor(data["initial_states"])
    archive = PlanArchive(problem, x0, problem.target_like(x0), torch.as_tensor(data["control_sequences"]))
    out = stitched(_Marker(), archive, torch.Generator().manual_seed(0))
    X = problem.rollout(archive.x0, archive.U)
    ks = set()
    for i in range(len(archive)):
        k = int(torch.nonzero(out[i, :, 0] > 50)[0])                  # the model's part starts here
        assert 1 <= k < HORIZON
        torch.testing.assert_close(out[i, :k], archive.U[i, :k])
        expected = 100.0 + X[i, k, 0] + torch.arange(HORIZON - k, dtype=out.dtype)
        torch.testing.assert_close(out[i, k:, 0], expected)
        ks.add(k)
    assert len(ks) > 5                                                 # the cut varies by start


def test_tails_start_where_the_archive_plan_leads_and_keep_its_rest(problem, data):
    x0 = torch.as_tensor(data["initial_states"])
    archive = PlanArchive(problem, x0, problem.target_like(x0), torch.as_tensor(data["control_sequences"]))
    rows = torch.tensor([0, 3, 3, 7])
    x, U = tails(_Marker(), archive, rows, torch.Generator().manual_seed(1))
    X = problem.rollout(archive.x0[rows], archive.U[rows])
    for j, i in enumerate(rows):
        k = int(torch.nonzero(torch.isclose(X[j, :-1], x[j:j + 1]).all(-1))[0])   # x is X[k]
        assert 1 <= k < HORIZON
        torch.testing.assert_close(U[j, :HORIZON - k], archive.U[i, k:])
        torch.testing.assert_close(U[j, HORIZON - k:, 0], 100.0 + X[j, -1, 0] + torch.arange(k, dtype=U.dtype))


def test_stitch_and_tail_starts_grow_the_archive_within_their_room(problem, data):
    config = SelfPlayConfig(fresh_starts=8, explore=1, stitch=1, tail_starts=300, explore_best=True, neighbours=2)
    loader = SelfPlayData(problem, data, 16, config, seed=0)
    model = build_model(problem)
    costs = []
    for epoch in range(3):
        loader.refresh(model, epoch)
        costs.append(loader.archive.cost[:loader.num_box].clone())
    assert len(loader.archive) == 48 + 8 + 300                        # 256 per refresh, capped at the room
    assert (costs[1] <= costs[0]).all() and (costs[2] <= costs[1]).all()
    a = loader.archive
    torch.testing.assert_close(a.cost, problem.evaluate(a.x0, a.U, a.target)["cost"])
    assert {"box_cost", "box_success"} <= set(loader.log[-1])
    b = SelfPlayData(problem, data, 16, config, seed=3)
    b.load_state_dict(loader.state_dict())
    b.refresh(model, 3)
    assert len(b.archive) == len(a)                                   # the restored ring keeps its room


def test_nearest_finds_the_nearest_others():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.0, 0.3], [5.0, 5.0]])
    assert nearest(x, 2, chunk=3).tolist() == [[1, 2], [0, 2], [0, 1], [2, 1]]
