"""Recording a training trajectory (read back by :mod:`distill.analysis.trajectory`): every member's softmax
outputs on a fixed set of images and, optionally, its flattened weights, once per epoch (Fort, Hu &
Lakshminarayanan 2019, "Deep Ensembles: A Loss Landscape Perspective", sections 3-4 use
exactly these two views of a trajectory: function space and weight space).

Layout, inside a run directory::

    trajectory/points.safetensors        x (N, C, H, W) uint8, y (N,) int64: the fixed images (written once)
    trajectory/epoch_0001.safetensors    probs (M, N, K) float32; weights.<m> (P_m,) float32 when recorded
    trajectory/epoch_0002.safetensors    ...

One file per epoch rather than one growing file: each epoch costs one write of its own size (a growing file
rewritten atomically every epoch costs O(epochs^2) bytes), a resumed run simply goes on adding files (an epoch
re-run after ``--resume`` overwrites its file), and readers load only the epochs and members they need. Every
file is written atomically (:func:`distill.checkpoint.save_tensors`).

``weights.<m>`` is member ``m``'s parameters (every weight and bias, BatchNorm's affine ones included, in
``named_parameters`` order) flattened in logical order (:func:`flat_params`); BatchNorm running statistics are buffers,
not recorded: analyses recompute them for every weight vector (:func:`distill.analysis.samplers.recompute_bn`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from distill.checkpoint import save_tensors
from distill.data.subsets import eval_subset
from distill.models.contract import DistillModel
from distill.predict import predict_logits

TRAJECTORY_DIR = "trajectory"
POINTS_FILE = "points.safetensors"


def members_of(model: DistillModel) -> list[nn.Module]:
    """The member networks of a model (an ensemble's members, Hydra's heads); a model whose members share one
    network (a BatchEnsemble) counts as one member."""
    return model.member_modules()


def flat_params(module: nn.Module) -> torch.Tensor:
    """Every parameter of ``module`` (weights and biases), flattened in ``named_parameters`` order: (P,) float32 CPU."""
    # reshape, not parameters_to_vector's view: a channels_last weight is not contiguous, and reshape keeps the
    # logical (out, in, h, w) order whatever the memory layout, so vectors of both layouts compare
    return torch.cat([p.detach().float().cpu().reshape(-1) for p in module.parameters()])


def epoch_file(run_dir: Path, epoch: int) -> Path:
    """The file of 1-based ``epoch``."""
    return Path(run_dir) / TRAJECTORY_DIR / f"epoch_{epoch:04d}.safetensors"


class TrajectoryRecorder:
    """An epoch callback for :class:`distill.loop.FitSetup` (``epoch_callbacks``): after each epoch, appends each
    member's softmax outputs on ``x_fixed`` and, with ``record_weights``, its flattened weights to
    ``run_dir/trajectory/``.

    ``x_fixed``: uint8 images ``(N, C, H, W)`` (usually 500 validation images drawn class-stratified: see
    :meth:`from_splits`);
    ``y_fixed``: their labels, stored beside them for accuracy along the trajectory. The model is evaluated in eval
    mode (BatchNorm running statistics) and its train/eval flags are restored afterwards; nothing is computed
    when the recorder is not installed.
    """

    def __init__(
        self,
        x_fixed: torch.Tensor,
        record_weights: bool = False,
        *,
        y_fixed: torch.Tensor | None = None,
        batch_size: int = 512,
    ) -> None:
        if x_fixed.dtype != torch.uint8 or x_fixed.dim() != 4 or len(x_fixed) == 0:
            raise ValueError(f"x_fixed must be non-empty uint8 images (N, C, H, W), got {tuple(x_fixed.shape)}")
        if y_fixed is not None and y_fixed.shape != x_fixed.shape[:1]:
            raise ValueError(f"y_fixed must be ({len(x_fixed)},), got {tuple(y_fixed.shape)}")
        self.x = x_fixed.detach().cpu().contiguous()
        self.y = None if y_fixed is None else y_fixed.detach().long().cpu()
        self.record_weights = record_weights
        self.batch_size = batch_size

    @classmethod
    def from_splits(cls, splits, images: int = 500, record_weights: bool = False, seed: int = 0) -> TrajectoryRecorder:
        """A recorder on ``images`` validation images drawn class-stratified with ``seed``. The validation split's
        indices are sorted, so on a class-sorted image folder its head is the first classes only."""
        idx = eval_subset(splits.val_y, images, seed)
        return cls(splits.val_x[idx], record_weights, y_fixed=splits.val_y[idx])

    def __call__(self, epoch: int, model: nn.Module, run_dir: Path) -> None:
        folder = Path(run_dir) / TRAJECTORY_DIR
        points = folder / POINTS_FILE
        if not points.exists():
            tensors = {"x": self.x} if self.y is None else {"x": self.x, "y": self.y}
            save_tensors(points, tensors, {"images": len(self.x)})
        logits = predict_logits(model, self.x, batch_size=self.batch_size)  # (M, N, K), eval mode, flags restored
        tensors = {"probs": logits.float().softmax(-1)}
        members = members_of(model)
        if self.record_weights:
            for m, member in enumerate(members):
                tensors[f"weights.{m}"] = flat_params(member)
        meta = {"epoch": epoch + 1, "members": len(members), "weights": self.record_weights}
        save_tensors(epoch_file(run_dir, epoch + 1), tensors, meta)
