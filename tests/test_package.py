"""The package's top level: the seed document's names, and a light import."""

import subprocess
import sys

import trc


def test_every_public_name_resolves_to_its_module_object():
    import trc.evaluation.refinement_evaluator
    import trc.training.supervised_trainer

    assert all(getattr(trc, name) is not None for name in trc.__all__)
    assert trc.train_with_process_supervision is trc.training.supervised_trainer.train_with_process_supervision
    assert trc.RefinementEvaluator is trc.evaluation.refinement_evaluator.RefinementEvaluator
    assert set(trc.__all__) <= set(dir(trc))


def test_unknown_name_is_an_attribute_error():
    try:
        trc.no_such_name
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("trc.no_such_name did not raise")


def test_import_does_not_load_plotting():
    code = "import sys, trc; trc.TinyRecursiveControl; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
