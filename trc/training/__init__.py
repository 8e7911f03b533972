"""Training: the losses (:mod:`~trc.training.process_supervision`), the problem-free
:mod:`~trc.training.trainer`, the two trainers (:mod:`~trc.training.supervised_trainer`),
self-play and curricula (:mod:`~trc.training.selfplay`, :mod:`~trc.training.curriculum`),
tuning in closed loop (:mod:`~trc.training.closed_loop_tuning`) and ``trc train``
(:mod:`~trc.training.train`)."""

from trc.training.supervised_trainer import train_behavior_cloning, train_with_process_supervision

__all__ = ["train_behavior_cloning", "train_with_process_supervision"]
