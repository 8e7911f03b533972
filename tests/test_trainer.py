"""The generic trainer on a toy regression: learning, determinism, resume, stops, checkpoints."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trc import TRCError
from trc.training.trainer import BEST, LAST, TrainConfig, Trainer, cosine_with_warmup


def toy_data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(n, 1, generator=g)
    return x, y


def toy_loader(batch_size=16):
    return DataLoader(TensorDataset(*toy_data()), batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(123))


def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))


def mse(model, batch):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {"mse": loss.detach(), "vector": torch.stack([loss.detach(), 2 * loss.detach()])}


def val_mse(model):
    x, y = toy_data(32, seed=1)
    return {"mse": ((model(x) - y) ** 2).mean().item()}


def config(tmp_path=None, **kw):
    kw = {"epochs": 4, "lr": 1e-2, "progress": False, "monitor": "mse",
          "checkpoint_dir": None if tmp_path is None else str(tmp_path), **kw}
    return TrainConfig(**kw)


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_lowers_the_loss_and_records_history():
    model = toy_model()
    before = val_mse(model)["mse"]
    history = Trainer(config(epochs=15)).fit(model, mse, toy_loader(), val_mse)
    assert val_mse(model)["mse"] < 0.5 * before
    assert len(history["epochs"]) == 15 and history["stop_reason"] is None
    record = history["epochs"][-1]
    assert set(record["train"]) == {"loss", "mse", "vector"} and len(record["train"]["vector"]) == 2
    assert history["best_metric"] == min(r["val"]["mse"] for r in history["epochs"])


def test_same_seed_same_result_and_other_seed_differs():
    runs = []
    for seed in (7, 7, 8):
        model = toy_model()
        Trainer(config(seed=seed, restore_best=False)).fit(model, mse, toy_loader())
        runs.append(params(model))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_resume_equals_uninterrupted(tmp_path):
    full = toy_model()
    history_full = Trainer(config(tmp_path / "full")).fit(full, mse, toy_loader(), val_mse)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path / "cut")).fit(toy_model(), mse, toy_loader(), val_mse,
                                              hooks={"on_epoch_end": interrupt})
    resumed = toy_model(seed=99)  # a different start: everything must come from the checkpoint
    history_resumed = Trainer(config(tmp_path / "cut")).fit(resumed, mse, toy_loader(), val_mse, resume=True)

    assert torch.equal(params(full), params(resumed))
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in h["epochs"]]
             for h in (history_full, history_resumed)]
    assert strip[0] == strip[1]
    for name in (LAST, BEST):
        a = torch.load(tmp_path / "full" / name, weights_only=True)["model_state"]
        b = torch.load(tmp_path / "cut" / name, weights_only=True)["model_state"]
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoints_load_without_pickle_and_carry_the_optimizer(tmp_path):
    Trainer(config(tmp_path, epochs=2)).fit(toy_model(), mse, toy_loader(), val_mse)
    ckpt = torch.load(tmp_path / LAST, weights_only=True)
    state = ckpt["trainer_state"]
    assert state["epoch"] == 1 and state["optimizer"]["state"] and state["scheduler"]["last_epoch"] == 8


def test_non_finite_loss_stops_and_keeps_the_best_checkpoint(tmp_path):
    calls = {"n": 0}

    def exploding(model, batch):
        calls["n"] += 1
        loss, parts = mse(model, batch)
        return (loss * math.nan if calls["n"] == 10 else loss), parts  # epoch 2, step 9

    model = toy_model()
    trainer = Trainer(config(tmp_path, epochs=5))
    history = trainer.fit(model, exploding, toy_loader(), val_mse)
    assert history["stop_reason"] == "non-finite loss at epoch 2, step 9"
    assert len(history["epochs"]) == 2
    best = torch.load(tmp_path / BEST, weights_only=True)
    last = torch.load(tmp_path / LAST, weights_only=True)
    assert last["trainer_state"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in best["model_state"].values())
    assert all(torch.equal(v, best["model_state"][k]) for k, v in model.state_dict().items())


def test_early_stopping_after_patience_epochs():
    flat = lambda model: {"mse": 1.0}  # never improves after the first epoch
    history = Trainer(config(epochs=20, patience=3)).fit(toy_model(), mse, toy_loader(), flat)
    assert len(history["epochs"]) == 4
    assert history["stop_reason"] == "no better mse for 3 epochs"


def test_without_validation_the_training_loss_is_monitored():
    history = Trainer(config(monitor="loss")).fit(toy_model(), mse, toy_loader())
    assert history["best_metric"] == min(r["train"]["loss"] for r in history["epochs"])


def test_schedule_warms_up_then_decays_to_the_floor():
    f = cosine_with_warmup(100, warmup=0.1, min_ratio=0.01)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == pytest.approx(0.01)
    assert all(f(s) >= f(s + 1) for s in range(10, 100))


@pytest.mark.parametrize("kw", [{"epochs": 0}, {"lr": -1.0}, {"lr": math.nan}, {"mode": "up"},
                                {"grad_clip": 0.0}, {"warmup": 1.0}, {"patience": 0}])
def test_bad_config_is_one_sentence(kw):
    """The error names the offending field, on one line."""
    (field,) = kw
    with pytest.raises(TRCError, match=rf"\b{field}\b") as error:
        TrainConfig(**kw)
    assert "\n" not in str(error.value)


def test_unknown_monitor_is_reported():
    with pytest.raises(TRCError, match="monitored metric 'cost'"):
        Trainer(config(monitor="cost", epochs=1)).fit(toy_model(), mse, toy_loader(), val_mse)


def test_a_loader_without_batches_is_reported(tmp_path):
    empty = DataLoader(TensorDataset(torch.zeros(0, 3), torch.zeros(0, 1)), batch_size=4)
    with pytest.raises(TRCError, match="the training data gave no batches in epoch 0"):
        Trainer(config(tmp_path, epochs=1)).fit(toy_model(), mse, empty, val_mse)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_holding_a_run_is_not_overwritten_without_resume(tmp_path):
    Trainer(config(tmp_path, epochs=1)).fit(toy_model(), mse, toy_loader(), val_mse)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TRCError, match="already holds a run; pass resume=True"):
        Trainer(config(tmp_path, epochs=2)).fit(toy_model(1), mse, toy_loader(), val_mse)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_hooks_see_every_epoch_and_step():
    seen = {"start": [], "steps": [], "end": []}
    hooks = {"on_epoch_start": seen["start"].append,
             "on_batch_end": lambda step, loss, parts: seen["steps"].append(step),
             "on_epoch_end": lambda record: seen["end"].append(record["epoch"])}
    Trainer(config(epochs=2)).fit(toy_model(), mse, toy_loader(), val_mse, hooks=hooks)
    assert seen["start"] == seen["end"] == [0, 1] and seen["steps"] == list(range(1, 9))


def test_keyed_adamw_scales_each_keys_steps_by_its_own_gradients():
    """Batches of two kinds pulling one weight apart, their gradients 1e6 apart in size: with one AdamW
    the large kind's moments carry every step its way; with ``use(kind)`` each kind steps by lr its own way."""
    from trc.training.trainer import KeyedAdamW

    def moves(keyed: bool):
        w = nn.Parameter(torch.zeros(1))
        opt = (KeyedAdamW if keyed else torch.optim.AdamW)([w], lr=0.01, weight_decay=0.0)
        out = []
        for i in range(6):
            slope = 1e3 if i % 2 == 0 else -1e-3           # kind 0 pulls w down, kind 1 up
            before = w.detach().clone()
            opt.zero_grad()
            (slope * w).sum().backward()
            if keyed:
                opt.use(i % 2)
            opt.step()
            out.append((w.detach() - before).item())
        return out, opt

    shared, _ = moves(False)
    keyed, opt = moves(True)
    assert all(m < 0 for m in shared)                                   # kind 1 never gets its way
    assert keyed[0::2] == pytest.approx([-0.01] * 3, rel=1e-3) and keyed[1::2] == pytest.approx([0.01] * 3, rel=1e-3)
    w = opt.param_groups[0]["params"][0]
    assert set(opt.states) == {0, 1} and all(opt.states[k][w]["step"] == 3 for k in (0, 1))
    back = KeyedAdamW([nn.Parameter(torch.zeros(1))], lr=0.01, weight_decay=0.0)
    back.load_state_dict(opt.state_dict())                              # every kind's moments travel with it
    w_back = back.param_groups[0]["params"][0]
    for k in (0, 1):
        assert torch.equal(opt.states[k][w]["exp_avg_sq"], back.states[k][w_back]["exp_avg_sq"])


def test_resuming_a_run_that_picked_its_best_epoch_by_another_metric_is_one_error(tmp_path):
    Trainer(config(tmp_path, epochs=2)).fit(toy_model(), mse, toy_loader(), val_mse)
    kept = (tmp_path / LAST).read_bytes()
    with pytest.raises(TRCError, match="picked its best epoch by 'mse', this training picks by 'loss'"):
        Trainer(config(tmp_path, epochs=3, monitor="loss")).fit(toy_model(), mse, toy_loader(), val_mse, resume=True)
    assert (tmp_path / LAST).read_bytes() == kept


def test_resume_with_keyed_moments_equals_uninterrupted(tmp_path):
    key = {"optimizer_key": lambda batch: int(batch[0][0, 0] > 0)}
    full = toy_model()
    Trainer(config(tmp_path / "full")).fit(full, mse, toy_loader(), val_mse, hooks=key)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(config(tmp_path / "cut")).fit(toy_model(), mse, toy_loader(), val_mse,
                                              hooks={**key, "on_epoch_end": interrupt})
    resumed = toy_model(seed=99)
    Trainer(config(tmp_path / "cut")).fit(resumed, mse, toy_loader(), val_mse, hooks=key, resume=True)
    assert torch.equal(params(full), params(resumed))
    plain = toy_model()
    Trainer(config()).fit(plain, mse, toy_loader(), val_mse)
    assert not torch.equal(params(full), params(plain))   # the keys changed the steps
