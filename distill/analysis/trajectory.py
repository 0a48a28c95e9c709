"""Reading a training trajectory that :class:`distill.recorder.TrajectoryRecorder` wrote (its layout is described
there): every member's softmax outputs on fixed images and, optionally, its flattened weights, once per epoch.

The recorder lives below the analyses, in :mod:`distill.recorder`, because training installs it; its names are
importable from here too, for the analyses that read what it wrote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from distill import UserError
from distill.checkpoint import META_KEY
from distill.recorder import POINTS_FILE, TRAJECTORY_DIR, TrajectoryRecorder, epoch_file, flat_params, members_of

__all__ = [
    "POINTS_FILE",
    "TRAJECTORY_DIR",
    "Trajectory",
    "TrajectoryRecorder",
    "epoch_file",
    "flat_params",
    "load_trajectory",
    "members_of",
]


@dataclass
class Trajectory:
    """A recorded trajectory, read lazily: ``probs`` for all epochs is small; weights are read per member."""

    run_dir: Path
    epochs: list[int]  # 1-based epoch numbers present, ascending (a gap means an epoch was not recorded)
    x: torch.Tensor  # (N, C, H, W) uint8
    y: torch.Tensor | None  # (N,) int64
    members: int
    has_weights: bool

    def files(self) -> list[Path]:
        return [epoch_file(self.run_dir, e) for e in self.epochs]

    def probs(self) -> torch.Tensor:
        """``(E, M, N, K)`` softmax outputs of every member at every recorded epoch."""
        out = []
        for f in self.files():
            with safe_open(str(f), framework="pt") as st:
                out.append(st.get_tensor("probs"))
        return torch.stack(out)

    def weights(self, member: int, last: int | None = None, index: list[int] | None = None) -> torch.Tensor:
        """``(E', P)`` flattened weights of ``member`` at the recorded epochs: the ``last`` ones only, or those at
        positions ``index`` of :attr:`epochs`, if given."""
        if not self.has_weights:
            raise UserError(f"{self.run_dir}: the trajectory has no weights (record it with record_weights)")
        if not 0 <= member < self.members:
            raise UserError(f"member {member}: the trajectory has members 0..{self.members - 1}")
        files = self.files()
        files = [files[i] for i in index] if index is not None else files[-last:] if last else files
        out = []
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                out.append(st.get_tensor(f"weights.{member}"))
        return torch.stack(out)


def load_trajectory(run_dir: str | Path) -> Trajectory | None:
    """The trajectory recorded in ``run_dir``, or None when there is none."""
    run_dir = Path(run_dir)
    folder = run_dir / TRAJECTORY_DIR
    files = sorted(folder.glob("epoch_*.safetensors"))
    if not files or not (folder / POINTS_FILE).is_file():
        return None
    epochs, members, has_weights = [], None, True
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as st:
                meta = json.loads((st.metadata() or {}).get(META_KEY, "{}"))
        except Exception as err:  # a truncated or foreign file: name it
            raise UserError(f"{f}: not a readable trajectory file ({err})") from None
        if members is not None and meta.get("members") != members:
            raise UserError(f"{f}: {meta.get('members')} members, earlier epochs have {members}")
        members = meta.get("members")
        has_weights = has_weights and bool(meta.get("weights"))
        epochs.append(int(meta["epoch"]))
    with safe_open(str(folder / POINTS_FILE), framework="pt") as st:
        keys = set(st.keys())
        x = st.get_tensor("x")
        y = st.get_tensor("y") if "y" in keys else None
    order = sorted(range(len(epochs)), key=epochs.__getitem__)
    return Trajectory(run_dir, [epochs[i] for i in order], x, y, int(members), has_weights)
