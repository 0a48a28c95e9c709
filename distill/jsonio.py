"""Plain JSON for reports and analyses: numbers, text, lists and dicts only; NaN and infinities become null."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from distill.checkpoint import atomic_write_text


def to_plain(obj: Any) -> Any:
    """Tensors, arrays, tuples, paths and numpy scalars to plain JSON values; non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor) or type(obj).__name__ == "ndarray":
        return to_plain(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, (str, int)):
        return obj
    if hasattr(obj, "item"):  # numpy scalars
        return to_plain(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    raise TypeError(f"not JSON data: {type(obj).__name__}")


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(to_plain(obj), indent=2, allow_nan=False) + "\n")
