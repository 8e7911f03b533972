"""Problems from user code: ``module:Name`` specs, the ``trc.problems`` entry points, and the CLI end to end."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

import trc
from trc.cli import main
from trc.data.datasets import load_dataset
from trc.dynamics import rk4, rollout
from trc.errors import TRCError
from trc.models.checkpoint import load_checkpoint

MODULE = '''
from dataclasses import dataclass

import torch

from trc.problems import ControlProblem, diag


@dataclass(frozen=True)
class Cart(ControlProblem):
    """A cart with friction: dynamics only, no jacobians (the plain autograd path)."""

    name: str = "cart"
    n_x: int = 2
    n_u: int = 1
    dt: float = 0.1
    horizon: int = 10
    u_max: float = 2.0
    x0_low: tuple = (-1.0, -1.0)
    x0_high: tuple = (1.0, 1.0)
    target: tuple = (0.0, 0.0)
    Q: tuple = diag(1.0, 1.0)
    R: tuple = diag(0.1)
    Qf: tuple = diag(10.0, 10.0)
    success_tol: float = 0.3
    friction: float = 0.5

    def dynamics(self, x, u):
        return torch.stack([x[:, 1], -self.friction * x[:, 1] + u[:, 0]], dim=-1)


def slippery(**overrides):
    return Cart(**{"friction": 0.1, **overrides})


not_a_problem = 3
'''


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    name = f"user_problems_{tmp_path.name}"  # a fresh module per test
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_a_module_spec_gives_the_class_or_factory_and_rebuilds_itself(user_module):
    cart = trc.get_problem(f"{user_module}:Cart")
    assert type(cart).__name__ == "Cart" and cart.name == f"{user_module}:Cart"
    slippery = trc.get_problem(f"{user_module}:slippery", horizon=5)
    assert slippery.friction == 0.1 and slippery.horizon == 5
    assert trc.get_problem(**slippery.to_dict()) == slippery


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:Cart", "cannot import module 'no_such_module_xyz'"),
    ("{m}:Nope", "has no 'Nope'"),
    ("{m}:not_a_problem", "not a ControlProblem class or factory"),
    ("{m}:", "must be 'module:Name'"),
    ("cartpole", "or 'module:Name'"),
])
def test_bad_specs_are_one_sentence(user_module, spec, message):
    with pytest.raises(TRCError, match=message):
        trc.get_problem(spec.format(m=user_module))


def test_an_installed_package_registers_a_name_by_entry_point(user_module, tmp_path):
    dist = tmp_path / "cartpkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cartpkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[trc.problems]\nusercart = {user_module}:Cart\n")
    cart = trc.get_problem("usercart", friction=0.2)
    assert type(cart).__name__ == "Cart" and cart.name == "usercart" and cart.friction == 0.2
    assert "usercart" in trc.problems.known_problems()


def test_a_problem_without_jacobians_simulates_by_plain_autograd(user_module):
    cart = trc.get_problem(f"{user_module}:Cart")
    x0 = cart.sample_initial_states(4, torch.Generator().manual_seed(0)).double()
    U = torch.randn(4, cart.horizon, 1, dtype=torch.float64, requires_grad=True)
    X = cart.rollout(x0, U)
    reference = rollout(rk4(cart.dynamics, cart.dt), x0, U)
    assert torch.allclose(X, reference)
    g, = torch.autograd.grad(X.square().sum(), U)
    g_ref, = torch.autograd.grad(reference.square().sum(), U)
    assert torch.allclose(g, g_ref)
    U_opt = trc.optimal_controls(cart, x0)                    # the experts linearise by autograd
    assert U_opt.shape == (4, cart.horizon, 1) and U_opt.abs().max() <= cart.u_max


def test_generate_train_and_analyze_a_user_problem_from_the_cli(user_module, tmp_path, capsys):
    spec = f"{user_module}:Cart"
    data, out, fig = tmp_path / "cart.npz", tmp_path / "run", tmp_path / "cart.png"
    assert main(["generate", "--problem", spec, "--num_samples", "32", "--output", str(data)]) == 0
    assert load_dataset(data)["metadata"]["problem"]["name"] == spec
    assert main(["train", "--data", str(data), "--problem", spec, "--output_dir", str(out), "--epochs", "2",
                 "--batch_size", "8", "--quiet"]) == 0
    model = load_checkpoint(out / "best_model.pt")
    assert type(model.problem).__name__ == "Cart" and model.problem.name == spec
    assert main(["analyze", "--checkpoint", str(out / "best_model.pt"), "--data", str(data), "--problem", spec,
                 "--output", str(fig)]) == 0
    assert fig.exists() and fig.with_suffix(".json").exists()
    assert "success (%)" in capsys.readouterr().out
