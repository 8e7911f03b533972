"""The README's copy of the seed document's "Code Example" runs as written (``src`` -> ``trc``).

The blocks are read from the README's section "The seed document's code example", so the
README and this test cannot drift apart.  Only the data sizes and the epochs are made small.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

import trc

README = Path(__file__).resolve().parents[1] / "README.md"
SIZES = "n_train, n_val, n_test = 1000, 100, 100"


def seed_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("### The seed document's code example", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_seed_example_runs_as_written_and_trains(tmp_path, monkeypatch, capsys):
    blocks = seed_blocks()
    assert len(blocks) == 3 and "from trc.models import TinyRecursiveControl" in blocks[1]
    assert all("src" not in block for block in blocks)
    assert SIZES in blocks[0] and "epochs=100," in blocks[1]
    code = [blocks[0].replace(SIZES, "n_train, n_val, n_test = 64, 16, 16"),
            blocks[1].replace("epochs=100,", "epochs=3,"), blocks[2]]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    env: dict = {}
    for block in code:
        exec(compile(block, str(README), "exec"), env)  # noqa: S102 - the README's own example

    assert (tmp_path / "refinement.png").stat().st_size > 0
    printed = capsys.readouterr().out
    losses = [r["train"]["loss"] for r in env["trained_model"].training_history["epochs"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    metrics, conv = env["metrics"], env["conv_stats"]
    K = env["model"].num_iterations
    assert metrics["iteration_costs"].shape == (16, K + 1) and metrics["iteration_costs"] is metrics.costs
    assert metrics["iteration_improvements"].shape == (16, K)
    assert metrics["control_mse_per_iteration"].shape == (K + 1,)
    assert np.isclose(metrics["final_cost"], metrics.costs[:, -1].mean())
    # the convergence figures are those of the per-iteration costs: % of samples whose cost fell overall,
    # and per iteration the fraction whose cost fell there
    c = metrics.costs
    improving = 100.0 * np.mean(c[:, -1] < c[:, 0])
    assert conv["pct_samples_improving"] == improving and f"Samples improving: {improving:.1f}%" in printed
    np.testing.assert_array_equal(conv["improvement_rate_per_iter"], np.mean(np.diff(c, axis=1) < 0, axis=0))
    out = env["trained_model"](env["x0"][:5], return_all_iterations=True)
    assert out["all_controls"] is out.all_controls and out["all_controls"].shape == (5, K + 1, 100, 1)


def test_the_readmes_python_block_runs_as_written(tmp_path, monkeypatch):
    """The README's "And from Python:" block, on a small model saved where the block loads it from."""
    from trc.models.checkpoint import save_checkpoint
    from trc.models.tiny_recursive_control import TinyRecursiveControl

    block = re.findall(r"```python\n(.*?)```", README.read_text().split("And from Python:", 1)[1], flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    (tmp_path / "outputs" / "vanderpol_ps").mkdir(parents=True)
    save_checkpoint(TinyRecursiveControl.from_preset("small", trc.get_problem("vanderpol")),
                    tmp_path / "outputs" / "vanderpol_ps" / "best_model.pt")
    env: dict = {}
    exec(compile(block, str(README), "exec"), env)  # noqa: S102 - the README's own example
    T = env["model"].problem.horizon
    assert env["U"].shape == (1, T, 1) and env["u"].shape == (1,)
    assert env["result"].X.shape == (1, T + 1, 2) and env["info"]["iterations"].shape == (1,)
