"""Sweeps: many ``trc train`` runs as one Optuna study, shared by processes and machines.

- :mod:`trc.sweep.storage`: the journal file or database a study lives in; heartbeats and retries.
- :mod:`trc.sweep.grid`: ``--grid`` over train flags, or the TPE search space.
- :mod:`trc.sweep.objective`: one trial, one ``trc train`` run scored by its validation cost.
- :mod:`trc.sweep.worker`: join the study and take trials until none is left.
- :mod:`trc.sweep.report`: the table (mean +- std over seeds), figure and JSON; :func:`grid_results`.
- :mod:`trc.sweep.command`: ``trc sweep``.
"""

from trc.sweep.report import format_report, grid_results

__all__ = ["format_report", "grid_results"]
