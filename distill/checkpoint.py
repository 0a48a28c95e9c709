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

import hashlib
import json
import math
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


# --- a user's own checkpoints (distill import-teacher) ------------------------------------------------

STATE_DICT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")
_NESTED = ("state_dict", "model_state_dict", "model")  # where training scripts commonly nest a state dict


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """A user's checkpoint as a flat ``{key: tensor}`` state dict, and how it was read (for the record).

    ``.safetensors``: read as it is. ``.pt`` / ``.pth`` / ``.bin``: ``torch.load(weights_only=True)``, which builds
    tensors and plain containers only and never runs pickled code; a state dict nested under one of
    ``state_dict`` / ``model_state_dict`` / ``model`` is taken from there, and a ``module.`` prefix on every key
    (a model saved from ``DataParallel``) is dropped. Anything else is a UserError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--checkpoint {path}: {'not a file' if path.exists() else 'file not found'}")
    if path.suffix not in STATE_DICT_SUFFIXES:
        raise UserError(f"--checkpoint {path}: expected a state dict in {', '.join(STATE_DICT_SUFFIXES)}")
    how = "safetensors"
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"--checkpoint {path}: not a readable safetensors file ({err})") from None
    else:
        how = "torch.load(weights_only=True)"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # unpickling refused or a damaged file: torch raises many types
            first = (str(err).strip().splitlines() or [""])[0][:200]
            why = f"{type(err).__name__}: {first}"
            raise UserError(f"--checkpoint {path}: not loadable with weights_only=True ({why})") from None
        for key in _NESTED:
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state, how = state[key], f"{how}['{key}']"
                break
    if not isinstance(state, dict) or not state:
        got = "an empty one" if isinstance(state, dict) else f"a {type(state).__name__}"
        raise UserError(f"--checkpoint {path}: expected a state dict (key -> tensor), got {got}")
    bad = next((k for k, v in state.items() if not torch.is_tensor(v)), None)
    if bad is not None:
        raise UserError(f"--checkpoint {path}: key {bad!r} holds a {type(state[bad]).__name__}; expected only tensors")
    if all(str(k).startswith("module.") for k in state):
        state, how = {k[len("module.") :]: v for k, v in state.items()}, f"{how}, 'module.' prefix dropped"
    return state, how


def load_state_strict(module: nn.Module, state: dict[str, torch.Tensor], source: Path, what: str) -> None:
    """Load a user's ``state`` into ``module`` (built by architecture ``what``) with every key and shape equal;
    otherwise a UserError naming the file and the first mismatching key, in sorted order."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    counts = f"({len(missing)} missing, {len(unexpected)} unexpected of the file's {len(state)} keys)"
    if missing and (not unexpected or missing[0] <= unexpected[0]):
        raise UserError(f"--checkpoint {source}: key {missing[0]!r} of {what} is missing from the file {counts}")
    if unexpected:
        raise UserError(f"--checkpoint {source}: unexpected key {unexpected[0]!r}, not in {what} {counts}")
    for k in sorted(own):
        if own[k].shape != state[k].shape:
            raise UserError(
                f"--checkpoint {source}: key {k!r} has shape {tuple(state[k].shape)} in the file, "
                f"{tuple(own[k].shape)} in {what}"
            )
    module.load_state_dict(state, strict=True)


def save_model(run_dir: Path, model: nn.Module | dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    """The selected model: weights, then its JSON description (the JSON is written last: it marks a
    complete checkpoint). The plugins and API model factories of this process are recorded as ``plugins``, so a
    later process can rebuild the model (:mod:`distill.plugins`)."""
    from distill.plugins import records

    plugins = records(info.get("spec"))
    if plugins:
        info = {**info, "plugins": plugins}
    # a mapping: the weights themselves (members spread over processes, gathered to the main one: distill/parallel.py)
    weights = model if isinstance(model, dict) else model.state_dict()
    save_tensors(run_dir / "model.safetensors", weights, {"spec": info.get("spec")})
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


def require_role(run_dir: Path, info: dict[str, Any], role: str, flag: str) -> None:
    """UserError unless ``model.json``'s role is ``role``: a student run given as ``--teacher`` would otherwise be
    distilled from or reported as a teacher, silently."""
    found = info.get("role")
    if found != role:
        what = f"a {found} run (role {found!r})" if isinstance(found, str) else "a run with no role in its model.json"
        raise UserError(f"{flag} {run_dir}: {what}, expected a {role} run")


def weights_sha256(run_dir: str | Path) -> str:
    """sha256 of a run's selected weights file ``model.safetensors``, byte for byte (header included): what a
    student records of its teacher (``model.json``'s ``teacher_sha256``). The file's bytes, not its path or
    mtime: a run directory copied elsewhere hashes the same; a teacher trained again does not."""
    path = Path(run_dir) / "model.safetensors"
    if not path.is_file():
        raise UserError(f"{run_dir}: no model.safetensors here; expected a finished run directory")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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
    from distill.plugins import load_recorded

    load_recorded(info, run_dir)  # the user's architectures this run was built with, or a line naming the file
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


class Classifier(nn.Module):
    """A run's model as a plain classifier: ``x (B, C, H, W)`` float [0, 1] pixels -> ``(B, K)`` logits.

    One network (a single network, a single-network or Dirichlet student): its logits, unchanged. Several
    outputs per input (an ensemble, a BatchEnsemble or Hydra student): ``log p_bar``, the log of the members'
    mean probabilities, which are logits of the ensemble's prediction (``softmax`` of them is ``p_bar``); the
    mean of the members' raw logits would be another, uncalibrated, classifier. Normalisation is inside."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(x)  # (M, B, K)
        if logits.shape[0] == 1:
            return logits[0]
        log_p = logits.float().log_softmax(dim=-1)  # (M, B, K)
        return torch.logsumexp(log_p, dim=0) - math.log(logits.shape[0])  # (B, K)


def load_classifier(run_dir: str | Path) -> Classifier:
    """A run's selected model as a :class:`Classifier` (``x -> (B, K)`` logits), in eval mode, on the CPU: for
    deployment from Python. ``load_model`` gives the internal form, ``(logits (M, B, K), features)``."""
    model, _ = load_model(run_dir)
    return Classifier(model).eval()


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
