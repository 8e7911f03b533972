"""Checkpoints: exact round trip, atomic writes, and one clear error for every bad file."""

from __future__ import annotations

import builtins
import os
import pickle

import pytest
import torch

import trc
from trc.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from trc.models.config import TRCConfig
from trc.models.tiny_recursive_control import TinyRecursiveControl
from trc.models.value_predictor import create_value_predictor


def tiny(problem="vanderpol", **overrides) -> TinyRecursiveControl:
    torch.manual_seed(0)
    cfg = dict(latent_dim=16, hidden_dim=32, feedback_points=3, use_two_level=True, H_cycles=2)
    return TinyRecursiveControl(TRCConfig(**{**cfg, **overrides}), problem)


@pytest.fixture
def saved(tmp_path):
    model = tiny(trc.get_problem("vanderpol", mu=1.5))
    path = save_checkpoint(model, tmp_path / "run" / "best_model.pt", epoch=3, val_loss=0.25, seed=0)
    return model, path


def test_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.problem == model.problem and loaded.problem.mu == 1.5
    assert loaded.config == model.config
    assert loaded.checkpoint_metadata == {"epoch": 3, "val_loss": 0.25, "seed": 0}
    assert getattr(loaded, "value_predictor", None) is None
    x0 = model.problem.sample_initial_states(6, torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = (m(x0, return_all_iterations=True) for m in (model, loaded))
    assert torch.equal(a.all_controls, b.all_controls) and torch.equal(a.z_L, b.z_L)
    assert load_checkpoint(path, problem=trc.get_problem("vanderpol", mu=1.5)).config == model.config
    assert sorted(os.listdir(path.parent)) == ["best_model.pt"]  # no temporary files left


def test_value_predictor_travels_with_the_model(tmp_path):
    model = tiny()
    vp = create_value_predictor(model.config.latent_dim, "medium")
    path = save_checkpoint(model, tmp_path / "m.pt", value_predictor=vp)
    loaded = load_checkpoint(path)
    z = torch.randn(4, 16)
    assert torch.equal(loaded.value_predictor(z), vp(z))
    assert not any(k.startswith("value_predictor") for k in loaded.state_dict())
    again = load_checkpoint(save_checkpoint(loaded, tmp_path / "again.pt"))  # re-saving keeps it
    assert torch.equal(again.value_predictor(z), vp(z))
    with pytest.raises(trc.TRCError, match="width"):
        save_checkpoint(model, tmp_path / "bad.pt", value_predictor=create_value_predictor(8))


def test_a_value_head_attached_as_submodule_is_stored_apart(tmp_path):
    model = tiny()
    model.value_predictor = create_value_predictor(model.config.latent_dim)  # as a trainer does
    loaded = load_checkpoint(save_checkpoint(model, tmp_path / "m.pt"))
    z = torch.randn(3, 16)
    assert torch.equal(loaded.value_predictor(z), model.value_predictor(z))


def test_trainer_state_round_trip(tmp_path):
    model = tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(2, 2)).controls.sum().backward()
    optimizer.step()
    state = {"epoch": 4, "optimizer": optimizer.state_dict(), "history": {"loss": [1.0, 0.5]}}
    path = save_checkpoint(model, tmp_path / "last_model.pt", trainer_state=state, seed=1)
    back = read_checkpoint(path)["trainer_state"]
    fresh = torch.optim.AdamW(tiny().parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])
    assert back["epoch"] == 4 and back["history"] == {"loss": [1.0, 0.5]}
    original, reloaded = optimizer.state_dict(), fresh.state_dict()
    stepped = [i for i, p in enumerate(model.parameters()) if p.grad is not None]
    assert stepped and sorted(original["state"]) == stepped              # the step left moments to compare
    assert sorted(reloaded["state"]) == stepped
    assert any(original["state"][i]["exp_avg"].abs().max() > 0 for i in stepped)
    for i in stepped:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(reloaded["state"][i][key], original["state"][i][key]), (i, key)
    assert reloaded["param_groups"] == original["param_groups"]
    assert load_checkpoint(path).checkpoint_metadata == {"seed": 1}


def test_unsafe_or_non_json_content_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(trc.TRCError, match="JSON"):
        save_checkpoint(tiny(), tmp_path / "m.pt", tensor=torch.ones(2))
    WritesAFile.marker = tmp_path / "EXECUTED"
    with pytest.raises(trc.TRCError, match="trainer_state"):
        save_checkpoint(tiny(), tmp_path / "m.pt", trainer_state={"fn": WritesAFile()})
    with pytest.raises(trc.TRCError, match="trainer_state"):  # however deep it sits
        save_checkpoint(tiny(), tmp_path / "m.pt", trainer_state={"log": [{3: (1.0, [WritesAFile()])}]})
    assert not (tmp_path / "m.pt").exists() and not WritesAFile.marker.exists()
    # what weights_only loading reads beyond the plain types is checked by loading it, and written
    path = save_checkpoint(tiny(), tmp_path / "m.pt", trainer_state={"shape": torch.Size([2, 3]), "n": (1, None)})
    assert read_checkpoint(path)["trainer_state"] == {"shape": torch.Size([2, 3]), "n": (1, None)}


def rewrite(path, **changes):
    ckpt = torch.load(path, weights_only=True)
    ckpt.update(changes)
    torch.save(ckpt, path)
    return path


class WritesAFile:
    """Unpickling this creates a file: the proof that a loader executed the checkpoint."""

    marker = None

    def __reduce__(self):
        return (builtins.open, (str(self.marker), "w"))


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist"),
    ("folder", "not a file"),
    ("empty", "not a readable"),
    ("garbage", "not a readable"),
    ("text", "not a readable"),
    ("truncated", "not a readable"),
    ("torch_pickle_exec", "Python objects"),
    ("plain_pickle_exec", "is a plain pickle, not a torch checkpoint"),
    ("pickled_module", "Python objects"),
    ("bare_state_dict", "not a trc checkpoint"),
    ("other_format", "not a trc checkpoint"),
    ("future_version", "version 2"),
    ("no_config", "lacks its 'config'"),
    ("unknown_config_field", "no field 'heads'"),
    ("other_architecture", "another architecture"),
    ("unknown_problem", "unknown problem"),
])
def test_every_bad_checkpoint_is_one_error_naming_the_file(case, match, saved, tmp_path):
    model, good = saved
    path = tmp_path / f"{case}.pt"
    marker = tmp_path / "EXECUTED"
    WritesAFile.marker = marker
    raw = good.read_bytes()
    if case == "folder":
        path.mkdir()
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "garbage":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "text":
        path.write_text("not a checkpoint\n")
    elif case == "truncated":
        path.write_bytes(raw[: len(raw) // 2])
    elif case == "torch_pickle_exec":
        torch.save({"format": "trc-checkpoint", "payload": WritesAFile()}, path)
    elif case == "plain_pickle_exec":
        path.write_bytes(pickle.dumps(WritesAFile()))
    elif case == "pickled_module":
        torch.save(model, path)
    elif case == "bare_state_dict":
        torch.save(model.state_dict(), path)
    elif case != "missing":
        path.write_bytes(raw)
        ckpt = torch.load(path, weights_only=True)
        if case == "other_format":
            rewrite(path, format="something-else")
        elif case == "future_version":
            rewrite(path, version=2)
        elif case == "no_config":
            del ckpt["config"]
            torch.save(ckpt, path)
        elif case == "unknown_config_field":
            rewrite(path, config={**ckpt["config"], "heads": 4})
        elif case == "other_architecture":
            rewrite(path, config={**ckpt["config"], "latent_dim": 32})
        elif case == "unknown_problem":
            rewrite(path, problem={**ckpt["problem"], "name": "cartpole"})
    with pytest.raises(trc.TRCError, match=match) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert not marker.exists()


def test_loading_for_another_problem_is_an_error(saved):
    _, path = saved
    with pytest.raises(trc.TRCError, match="'vanderpol', not on the expected 'double_integrator'"):
        load_checkpoint(path, problem="double_integrator")
    with pytest.raises(trc.TRCError, match="differ in mu"):
        load_checkpoint(path, problem="vanderpol")  # mu = 1.0, the checkpoint's is 1.5
