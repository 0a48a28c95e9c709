"""Export a trained model to a file that runs with plain PyTorch, without this package.

The exported module maps [0, 1] pixels ``(B, C, H, W)`` to the log of the predictive distribution
``(B, K)``: log of the mean member probability for ensembles and BatchEnsembles, log-softmax for a single
network (normalisation included). ``exp`` of it is the prediction; argmax is the label.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from distill import UserError
from distill.checkpoint import load_model

FORMATS = ("torchscript", "exported")
# The files that make a run directory what it is; an export written over one would destroy the run.
RUN_FILES = ("model.safetensors", "state.safetensors", "model.json", "summary.json", "stages.json")
EXPORT_SUFFIXES = (".pt", ".pt2", ".pth", ".ts")  # what an earlier export may be called (and may be replaced)


class Deployable(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.log_m = math.log(getattr(model, "size", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(x)  # (M, B, K)
        return torch.logsumexp(logits.float().log_softmax(dim=-1), dim=0) - self.log_m


def export(run_dir: str | Path, fmt: str, out: str | Path | None = None, check_batch: int = 8) -> tuple[Path, float]:
    """Write the run's model as ``fmt`` and check it: returns (path, max |exported - checkpoint| on random
    inputs)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    suffix = {"torchscript": ".torchscript.pt", "exported": ".pt2"}[fmt]
    path = Path(out) if out is not None else Path(run_dir) / f"model{suffix}"
    check_target(path)
    model, info = load_model(run_dir)
    meta = info["meta"]
    net = Deployable(model).eval()
    example = torch.rand(check_batch, meta["channels"], *meta["size"], generator=torch.Generator().manual_seed(0))
    # Written under a temporary name next to the target and renamed once it loads back and matches: a crash
    # or a full disk leaves the old file (or none), never half an export. The temporary name keeps the
    # target's suffix, which torch.export's loader insists on.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            expected = net(example)
            if fmt == "torchscript":
                # torch.jit is deprecated upstream but still the format most C++/mobile runtimes load.
                warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
                scripted = torch.jit.trace(net, example)
                scripted.save(str(tmp))
                loaded = torch.jit.load(str(tmp))
            else:
                batch = torch.export.Dim("batch", min=1)
                program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
                torch.export.save(program, str(tmp))
                loaded = torch.export.load(str(tmp)).module()
            got = loaded(example)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path, float((got - expected).abs().max())


def check_target(path: Path) -> None:
    """Refuse an export target that would destroy something: a run's own files, a directory, a file that is
    not an earlier export; and one whose directory does not exist."""
    flag = f"--out {path}"
    for name in {path.name, path.resolve().name}:
        if name in RUN_FILES or name.endswith(".safetensors"):
            raise UserError(
                f"{flag}: '{name}' is a run directory's own file; exporting over it would destroy the run "
                f"(choose another name, e.g. model{'.pt2' if path.suffix == '.pt2' else '.torchscript.pt'})"
            )
    if path.is_dir():
        raise UserError(f"{flag}: is a directory; expected a file name, e.g. {path / 'model.torchscript.pt'}")
    if not path.parent.is_dir():
        what = "is not a directory" if path.parent.exists() else "does not exist"
        raise UserError(f"{flag}: directory {path.parent} {what}; create it first or choose another --out")
    if path.exists() and path.suffix not in EXPORT_SUFFIXES:
        raise UserError(
            f"{flag}: exists and is not an earlier export ({', '.join(EXPORT_SUFFIXES)}); refusing to overwrite it"
        )
