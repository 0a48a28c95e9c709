"""Checkpoints: safetensors tensors plus JSON, written atomically; loading never unpickles anything.

A run directory holds
- ``model.safetensors`` + ``model.json``: the selected weights, and what is needed to rebuild the model
  (model spec, dataset meta, recipe, seed, metrics);
- ``state.safetensors``: the last epoch's training state (weights, optimizer, RNG), with its non-tensor
  parts (epoch, scheduler, best score) as JSON in the safetensors header; what ``--resume`` reads.
Every file is written to a temporary name in the same directory and renamed over the old one, so a run
killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from distill import UserError

META_KEY = "distill"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:  # say which file could not be written (a full disk reports none)
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _os_error(err: SafetensorError, path: Path) -> OSError | None:
    """safetensors reports a failed write (full disk, quota) as its own error type; give it back as the
    OSError it is, naming the file, so the CLI prints one line instead of a traceback."""
    found = re.search(r"os error (\d+)", str(err))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` (and JSON ``meta`` in the header) to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(flat, tmp, metadata={META_KEY: json.dumps(meta or {})})
        os.replace(tmp, path)
    except SafetensorError as err:
        Path(tmp).unlink(missing_ok=True)
        converted = _os_error(err, path)
        if converted is None:
            raise
        raise converted from None
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.filename is None:
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file and its JSON header metadata. Raises UserError naming the file."""
    if not path.is_file():
        raise UserError(f"{path}: checkpoint file not found")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY, "{}")
        return tensors, json.loads(raw)
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable distill checkpoint ({err})") from None


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load ``weights`` into ``model`` strictly, saying exactly what differs when they do not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in weights and weights[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise UserError(f"{source}: weights do not match the architecture: {'; '.join(problems)}")
    model.load_state_dict(weights, strict=True)


def save_model(run_dir: Path, model: nn.Module, info: dict[str, Any]) -> None:
    """The selected model: weights, then its JSON description (the JSON is written last: it marks a
    complete checkpoint)."""
    save_tensors(run_dir / "model.safetensors", model.state_dict(), {"spec": info.get("spec")})
    atomic_write_text(run_dir / "model.json", json.dumps(info, indent=2, sort_keys=True))


def read_model_info(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "model.json"
    if not path.is_file():
        raise UserError(f"{run_dir}: no model.json here; expected a finished run directory (from 'distill teacher')")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected the JSON written by distill)") from None
    if not isinstance(info, dict):
        raise UserError(f"{path}: expected a JSON object at the top level, got {type(info).__name__}")
    return info


def load_model(run_dir: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a run's selected model from ``model.json`` and load ``model.safetensors`` into it."""
    from distill.data.base import DatasetMeta
    from distill.models import build_model

    run_dir = Path(run_dir)
    info = read_model_info(run_dir)
    try:
        meta = DatasetMeta.from_json(info["meta"])
        spec = info["spec"]
    except KeyError as err:
        raise UserError(f"{run_dir / 'model.json'}: missing field {err}") from None
    except (TypeError, ValueError) as err:
        raise UserError(f"{run_dir / 'model.json'}: field 'meta' is malformed ({err})") from None
    if not isinstance(spec, dict):
        raise UserError(f"{run_dir / 'model.json'}: field 'spec': expected a mapping, got {type(spec).__name__}")
    try:
        model = build_model(spec, meta)
    except UserError as err:  # e.g. an unknown kind or arch: say which file named it
        raise UserError(f"{run_dir / 'model.json'}: {err}") from None
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
        # everything here came from the file: a hand-edited or damaged model.json, not a bug to trace
        raise UserError(f"{run_dir / 'model.json'}: 'spec' and 'meta' do not describe a model ({err!r})") from None
    weights, _ = load_tensors(run_dir / "model.safetensors")
    load_weights(model, weights, run_dir / "model.safetensors")
    model.eval()
    return model, info


# --- optimizer / scheduler / RNG state as tensors + JSON --------------------------------------------


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars.setdefault(str(idx), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, val in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = val
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
