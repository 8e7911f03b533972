"""Where problems come from: ``get_problem(name, **overrides)``.

``name`` is one of

* a name in ``PROBLEMS`` below (the problems that ship with trc);
* a name that an installed package registers in the ``trc.problems`` entry-point group, e.g. in
  its ``pyproject.toml``: ``[project.entry-points."trc.problems"] cart = "mypackage.cart:Cart"``;
* ``"module:Name"``: any importable :class:`ControlProblem` subclass or factory, e.g.
  ``get_problem("mymodule:MyProblem")`` or ``trc generate --problem mymodule:MyProblem``.

A problem found by an entry point or a ``module:Name`` spec takes that string as its ``name``, so
``get_problem(**problem.to_dict())`` (what checkpoints and datasets store) finds it again.
Adding a problem to trc itself: write a small module with a :class:`ControlProblem` subclass
(see :mod:`trc.problems.vanderpol`) and add one line to ``PROBLEMS``.
"""

from __future__ import annotations

from typing import Any, Callable

from trc.errors import TRCError
from trc.problems.base import ControlProblem, diag
from trc.problems.double_integrator import DoubleIntegrator
from trc.problems.pendulum import Pendulum
from trc.problems.vanderpol import VanDerPol, simulate_vanderpol_torch, vanderpol_constrained

PROBLEMS: dict[str, Callable[..., ControlProblem]] = {
    "double_integrator": DoubleIntegrator,
    "pendulum": Pendulum,
    "vanderpol": VanDerPol,
    "vanderpol_constrained": vanderpol_constrained,
}


ENTRY_POINT_GROUP = "trc.problems"


def _entry_points() -> dict[str, Any]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _import(spec: str) -> Callable[..., ControlProblem]:
    """The object ``module:Name`` (``Name`` may be dotted) names."""
    import importlib

    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise TRCError(f"problem spec {spec!r} must be 'module:Name'")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise TRCError(f"problem {spec!r}: cannot import module {module!r} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise TRCError(f"problem {spec!r}: module {module!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def known_problems() -> list[str]:
    """The names ``get_problem`` knows without a ``module:Name`` spec: the registry and entry points."""
    return sorted(set(PROBLEMS) | set(_entry_points()))


def get_problem(name: str | ControlProblem, **overrides: Any) -> ControlProblem:
    """The problem ``name`` (see the module docstring) with parameters changed by ``overrides``.

    A :class:`ControlProblem` is returned as is (changed by ``overrides``).
    ``get_problem(**problem.to_dict())`` rebuilds a problem exactly.

    Raises:
        TRCError: unknown name, a module that does not import, or a factory that does not make a
            ``ControlProblem``; bad parameters.
    """
    overrides = {k: v for k, v in overrides.items() if k != "name"}
    if isinstance(name, ControlProblem):
        return name.replace(**overrides) if overrides else name
    if not isinstance(name, str):
        raise TRCError(f"a problem is a name, a 'module:Name' spec or a ControlProblem, got {type(name).__name__}")
    if name in PROBLEMS:
        factory = PROBLEMS[name]
    elif ":" in name:
        factory = _import(name)
    elif name in _entry_points():
        try:
            factory = _entry_points()[name].load()
        except Exception as e:  # noqa: BLE001 - a broken plugin is one sentence
            raise TRCError(f"problem {name!r}: its entry point does not load ({type(e).__name__}: {e})") from None
    else:
        raise TRCError(f"unknown problem {name!r}; known problems: {', '.join(known_problems())}, "
                       f"or 'module:Name' for a ControlProblem in your own module")
    if not callable(factory):
        raise TRCError(f"problem {name!r} is a {type(factory).__name__}, not a ControlProblem class or factory")
    try:
        default = factory()
    except TRCError:
        raise
    except Exception as e:  # noqa: BLE001 - user code: one sentence
        raise TRCError(f"problem {name!r} could not be made with its defaults ({type(e).__name__}: {e})") from None
    if not isinstance(default, ControlProblem):
        raise TRCError(f"problem {name!r} made a {type(default).__name__}, not a ControlProblem")
    if default.name != name:  # the name that finds it again
        default = default.replace(name=name)
    return default.replace(**overrides) if overrides else default


__all__ = ["ENTRY_POINT_GROUP", "PROBLEMS", "ControlProblem", "DoubleIntegrator", "Pendulum", "VanDerPol", "diag", "get_problem", "known_problems",
           "simulate_vanderpol_torch", "vanderpol_constrained"]
