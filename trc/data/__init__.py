"""Expert demonstrations: the experts (clipped LQR, the constrained optimum) and ``.npz`` datasets."""

from trc.data.experts import EXPERTS, lqr_controls, optimal_controls
from trc.data.datasets import generate_dataset, load_dataset, make_loader, save_dataset, split_dataset

__all__ = ["EXPERTS", "generate_dataset", "load_dataset", "lqr_controls", "make_loader", "optimal_controls",
           "save_dataset", "split_dataset"]
