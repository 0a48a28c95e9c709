"""Export a trained model to a file that runs with plain PyTorch, without this package.

The exported module maps [0, 1] pixels ``(B, C, H, W)`` to the log of the predictive distribution
``(B, K)``: log of the mean member probability for ensembles and BatchEnsembles, log-softmax for a single
network (normalisation included). ``exp`` of it is the prediction; argmax is the label.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from distill import UserError
from distill.checkpoint import load_model

FORMATS = ("torchscript", "exported")


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
    model, info = load_model(run_dir)
    meta = info["meta"]
    net = Deployable(model).eval()
    example = torch.rand(check_batch, meta["channels"], *meta["size"], generator=torch.Generator().manual_seed(0))
    suffix = {"torchscript": ".torchscript.pt", "exported": ".pt2"}[fmt]
    path = Path(out) if out is not None else Path(run_dir) / f"model{suffix}"
    with torch.no_grad():
        expected = net(example)
        if fmt == "torchscript":
            # torch.jit is deprecated upstream but still the format most C++/mobile runtimes load.
            warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")
            scripted = torch.jit.trace(net, example)
            scripted.save(str(path))
            loaded = torch.jit.load(str(path))
        else:
            batch = torch.export.Dim("batch", min=1)
            program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, str(path))
            loaded = torch.export.load(str(path)).module()
        got = loaded(example)
    return path, float((got - expected).abs().max())
