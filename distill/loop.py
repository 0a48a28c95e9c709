"""The one training loop, shared by teachers, single models and students, managed by Accelerate.

``fit`` knows a model, an objective and data; it never knows what the objective computes. It handles
device placement, mixed precision, gradient accumulation, multi-process (``accelerate launch``) sharding,
the per-iteration schedule, validation and best-on-validation selection, atomic checkpoints, resume,
TensorBoard logging and the final summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn
from tqdm.auto import tqdm

from distill import UserError
from distill.checkpoint import (
    atomic_write_text,
    load_tensors,
    load_weights,
    optimizer_from_flat,
    optimizer_to_flat,
    save_model,
    save_tensors,
)
from distill.data.base import Splits
from distill.data.batches import DeviceLoader, make_augment
from distill.metrics import accuracy, nll, pairwise_disagreement
from distill.models.contract import DistillModel
from distill.models.ensemble import mean_probs, to_channels_last
from distill.objectives.base import Objective
from distill.parallel import MemberSpread, check_members_mode, share_members, spread_of
from distill.predict import predict_logits
from distill.recipe import DataCfg, RunCfg, ScheduleCfg, TrainCfg


def lr_factor(step: int, total: int, steps_per_epoch: int, cfg: ScheduleCfg, base_lr: float) -> float:
    """Multiplier of the base learning rate after ``step`` optimizer steps (stepped per iteration)."""
    warm = int(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    t = (step - warm) / max(total - warm, 1)
    if cfg.name == "cosine":  # to eta_min at the end, as the official SDDE code
        floor = cfg.eta_min / base_lr
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.name == "step":
        return cfg.gamma ** sum(t >= m for m in cfg.milestones)
    if cfg.name == "warmup_linear":  # Nam et al.: warm-up, then linear decay
        return 1 - (1 - cfg.final_lr_fraction) * min(t, 1.0)
    return 1.0


def make_optimizer(model: DistillModel, train: TrainCfg) -> torch.optim.Optimizer:
    o = train.optim
    # Parameters that need their own settings (a BatchEnsemble's fast weights) come in groups of their own.
    groups = model.param_groups(o.lr, o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(
            groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov and o.momentum > 0, weight_decay=o.weight_decay
        )
    return torch.optim.Adam(groups, lr=o.lr, weight_decay=o.weight_decay)


def split_metrics(logits: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Accuracy and NLL of the ensemble, and each member's accuracy, from every member's logits ``(M, N, K)`` on a
    labelled split ``y: (N,)``: what validation selects on and what a run's summary reports on test."""
    ens = mean_probs(logits)
    member_acc = [accuracy(p, y) for p in logits.softmax(-1)]
    return {"acc": accuracy(ens, y), "nll": nll(ens, y), "member_acc": member_acc}


@torch.no_grad()
def validation_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict[str, float]:
    logits = predict_logits(model, x, device=device)  # (M, N, K): every member's, also when spread
    scores = split_metrics(logits, y)
    out = {"acc": scores["acc"], "nll": scores["nll"]}
    if logits.shape[0] > 1:
        out["member_acc"] = statistics.fmean(scores["member_acc"])
        out["disagreement"] = pairwise_disagreement(logits.softmax(-1))
    return out


@dataclass(frozen=True)
class RunInfo:
    """What a run records about itself in ``model.json`` (the loop adds the selected epoch and its validation
    scores). ``role`` also names the run in progress bars and errors. Optional fields absent from a run are left
    out of the file, as they always were."""

    role: str  # teacher | single | student | control
    spec: dict[str, Any]  # the model spec build_model rebuilds it from
    meta: dict[str, Any]  # the dataset's DatasetMeta, as JSON
    seed: int
    recipe: dict[str, Any]  # the whole recipe, as plain data (what distill.reuse compares)
    name: str | None = None  # a student's or control's name
    control: dict[str, Any] | None = None  # a control's resolved plan (distill.sections.ControlPlan)
    objective: dict[str, Any] | None = None  # an ensemble's objective with every default resolved
    teacher: str | None = None  # a student's teacher run directory
    teacher_sha256: str | None = None  # and its weights' hash, checked by `distill evaluate`
    perturb: dict[str, Any] | None = None  # a student's perturbation
    transfer: dict[str, Any] | None = None  # a student's data.transfer images: path, count, labels

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class FitSetup:
    """Everything ``fit`` needs besides the model and the objective."""

    out: Path
    splits: Splits
    data: DataCfg
    train: TrainCfg
    run: RunCfg
    seed: int
    info: RunInfo  # written to model.json
    outlier_x: torch.Tensor | None = None
    transfer_x: torch.Tensor | None = None  # (N', C, H, W) uint8 unlabelled images (data.transfer), for students
    resume: bool = False
    stop_after: int | None = None  # stop after this epoch (tests simulate a killed run)
    # called on the main process after each epoch's checkpoint with (epoch, unwrapped model, run dir):
    # recorders such as the loss-landscape trajectory hook in here, at no cost when absent
    epoch_callbacks: list[Callable[[int, nn.Module, Path], None]] = field(default_factory=list)


@dataclass
class TrainState:
    """Where training stands: what ``state.safetensors`` restores, besides weights, optimizer, schedule, RNG."""

    epoch: int = 0  # the next epoch to run (0-based)
    best: float = math.inf  # the selection score of the best epoch so far (lower is better)
    best_epoch: int = -1
    global_step: int = 0  # batches seen so far
    epoch_times: list[float] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


def save_state(
    path: Path,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    st: TrainState,
    parallel: dict[str, Any] | None = None,
) -> None:
    """One atomic file: weights, optimizer (flat tensors), RNG and ``st``; the counterpart of :func:`load_state`.
    ``parallel``: how the batches were drawn (``{"mode", "processes"}``), recorded in the header."""
    tensors, meta = state_parts(net, optimizer, scheduler, st)
    save_tensors(path, tensors, meta if parallel is None else {**meta, "parallel": parallel})


def state_parts(
    net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, st: TrainState
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What :func:`save_state` writes: the tensors and the JSON header."""
    opt_tensors, opt_meta = optimizer_to_flat(optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer)
    tensors = {**{f"model.{k}": v for k, v in net.state_dict().items()}, **opt_tensors, **_rng_state()}
    meta = {
        "epoch": st.epoch - 1,  # the epoch just finished, as earlier files store it
        "best": st.best,
        "best_epoch": st.best_epoch,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict(),
        "epoch_times": st.epoch_times,
        "history": st.history,
    }
    return tensors, meta


def load_state(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, batches_per_epoch: int
) -> TrainState:
    """Restore what :func:`save_state` wrote into ``model``, ``optimizer``, ``scheduler`` and torch's RNG (into a
    share of the members, its part: the file is the one-process state whatever the world size that wrote it)."""
    tensors, st = load_tensors(path)
    if (spread := spread_of(model)) is not None:
        tensors, st = spread.own_state(tensors, st, path)
    load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    optimizer_from_flat(optimizer, tensors, st["optimizer"])
    scheduler.load_state_dict(st["scheduler"])
    _set_rng_state(tensors)
    epoch = st["epoch"] + 1
    return TrainState(
        epoch, st["best"], st["best_epoch"], epoch * batches_per_epoch, st.get("epoch_times", []), st.get("history", [])
    )


def undo_accelerate_forward_wrap(model: nn.Module) -> None:
    """Remove the fp32-casting ``forward`` that ``Accelerator.prepare`` installs on ``model`` under mixed
    precision (it lives in the instance's ``__dict__``, with ``_original_forward`` beside it: Accelerate's
    private attributes, checked by tests/test_loop.py).

    Why: the wrapper returns fp32 copies of every output, and a copied Grad-CAM feature map is cut off from
    the logits' graph, so double backprop (SDDE) would fail. The loop's own ``acc.autocast()`` around the
    objective covers the forward instead."""
    if "forward" in vars(model):
        del model.forward
        model.__dict__.pop("_original_forward", None)


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"rng.cuda.{i}"] = s
    return state


def _set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _replicas_in_sync(acc: Accelerator, model: nn.Module) -> bool:
    """Whether every process ends with the same weights (what DDP promises): compares a checksum."""
    if acc.num_processes == 1:
        return True
    with torch.no_grad():
        total = sum(p.double().sum() * (i + 1) for i, p in enumerate(model.parameters()))
    sums = acc.gather(total.reshape(1).to(acc.device))
    return bool(torch.allclose(sums, sums[0].expand_as(sums), rtol=0, atol=1e-9))


def _diverged(s: FitSetup, epoch: int, what: str) -> UserError:
    kept = (
        f"{s.out} keeps the checkpoint of epoch {epoch}"
        if epoch > 0
        else "no epoch had finished, so no checkpoint was written"
    )
    return UserError(
        f"{s.info.role}: {what}: training diverged; lower train.optim.lr (now {s.train.optim.lr:g}); {kept}"
    )


class StepTerms:
    """The step's loss terms, summed on the device; read back to the host only when asked.

    A ``float(v)`` per term per step would stall a GPU once per term per step. Here the sums, and the
    finiteness of every loss, stay device tensors; ``fit`` reads them (one sync) every ``run.log_every`` steps
    and at the end of each epoch. The first non-finite step is recorded on the device too, so the error
    still names it exactly.
    """

    def __init__(self, device: torch.device) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self._first_bad = torch.full((), -1, dtype=torch.long, device=device)  # step number, -1: none yet

    def add(self, terms: dict[str, Any], step: int) -> None:
        """``terms['loss']`` first; ``step`` is the 1-based global step these terms belong to."""
        loss = terms["loss"]
        bad = ~torch.isfinite(loss.detach()) & (self._first_bad < 0)
        self._first_bad = torch.where(bad, torch.full_like(self._first_bad, step), self._first_bad)
        for k, v in terms.items():
            device = self._first_bad.device  # every sum on the loop's device (a no-op for terms already there)
            if isinstance(v, torch.Tensor):
                v = v.detach().to(device, torch.float64)
            else:  # a plain number among the terms (a perturbation statistic)
                v = torch.tensor(float(v), dtype=torch.float64, device=device)
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.steps += 1

    def first_bad_step(self) -> int | None:
        """The first step whose loss was not finite (one host sync), or None."""
        step = int(self._first_bad)
        return step if step >= 0 else None

    def means(self) -> dict[str, float]:
        """The mean of each term over the steps added (one host sync)."""
        if not self.sums:
            return {}
        values = torch.stack(list(self.sums.values())).tolist()
        return {k: v / max(self.steps, 1) for k, v in zip(self.sums, values)}


def _check_loss(s: FitSetup, epoch: int, terms: StepTerms) -> None:
    """Raise if a loss since the epoch began was not finite. Checked every ``log_every`` steps and at the
    epoch's end, always before the epoch's checkpoint: the files on disk stay those of the last finished
    epoch, and a rerun with a smaller lr can --resume from them."""
    step = terms.first_bad_step()
    if step is not None:
        raise _diverged(s, epoch, f"loss is not finite at epoch {epoch + 1}, step {step}")


@dataclass
class _Prepared:
    """What ``fit`` trains with, after Accelerate's ``prepare``."""

    acc: Accelerator
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loader: DeviceLoader
    state: TrainState
    spread: MemberSpread | None = None  # run.parallel: members: which members this process trains


def _prepare(model: nn.Module, objective: Objective, s: FitSetup) -> _Prepared:
    state_path = s.out / "state.safetensors"
    if state_path.exists() and not s.resume:
        raise UserError(f"--out {s.out}: holds a run already; pass --resume to continue it or choose another --out")
    acc = Accelerator(
        mixed_precision=s.run.mixed_precision,
        gradient_accumulation_steps=s.train.grad_accum,
        log_with="tensorboard",
        project_dir=str(s.out),
        # Without a GPU, multi-process runs (accelerate launch --multi_gpu) must ask for CPU (gloo) explicitly.
        cpu=s.run.cpu or not torch.cuda.is_available(),
    )
    device = acc.device
    if s.run.parallel == "members":
        model = _share_members(model, objective, s, acc)
    spread = spread_of(model)
    meta = s.splits.meta
    augment = make_augment(s.data.crop_padding, s.data.flip, meta.size) if s.data.augment else None
    if objective.needs_outliers and s.outlier_x is None:
        raise UserError("data.outlier: this objective needs an outlier dataset; set data.outlier (and outlier_root)")
    if s.transfer_x is not None and not getattr(objective, "uses_transfer", False):
        what = s.info.role
        raise UserError(f"data.transfer: the {what}'s objective does not learn from transfer images")
    loader = DeviceLoader(
        s.splits.train_x.to(device),
        s.splits.train_y.to(device),
        s.train.batch_size,
        # members spread: every process draws every member's batches, as one process does, and trains its own
        views=(model.size if spread is None else spread.total) if objective.per_member_batches else 1,
        seed=s.seed,
        augment=augment,
        rank=acc.process_index if spread is None else 0,
        world=acc.num_processes if spread is None else 1,
        outlier_x=s.outlier_x.to(device) if s.outlier_x is not None else None,
        transfer_x=s.transfer_x.to(device) if s.transfer_x is not None else None,
    )
    model.to(device)
    if s.run.channels_last:
        to_channels_last(model)
    if s.run.compile:
        acc.print(f"torch.compile: {model.compile_members(objective.compile_when)}")
    objective.to(device, torch.channels_last if s.run.channels_last else torch.contiguous_format)
    optimizer = make_optimizer(model, s.train)
    scheduler = _lr_scheduler(optimizer, len(loader) // s.train.grad_accum, s.train)
    state = TrainState()
    if s.resume and state_path.exists():
        state = load_state(state_path, model, optimizer, scheduler, len(loader))
        acc.print(f"resuming {s.out} at epoch {state.epoch + 1}/{s.train.epochs}")
    if spread is None:
        model, optimizer = acc.prepare(model, optimizer)
    else:  # no DDP: members on different processes share no parameter, so no gradient is all-reduced
        optimizer = acc.prepare(optimizer)
    undo_accelerate_forward_wrap(acc.unwrap_model(model))
    if acc.is_main_process:
        s.out.mkdir(parents=True, exist_ok=True)
    acc.init_trackers("tb")
    return _Prepared(acc, model, optimizer, scheduler, loader, state, spread)


def _lr_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, train: TrainCfg
) -> torch.optim.lr_scheduler.LambdaLR:
    total, base_lr = steps_per_epoch * train.epochs, train.optim.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, steps_per_epoch, train.schedule, base_lr)
    )


def _share_members(model: nn.Module, objective: Objective, s: FitSetup, acc: Accelerator) -> nn.Module:
    """This process's share of the members; a student's objective spreads its frozen teacher's members instead
    (:mod:`distill.spread_teacher`) and the student, returned whole, trains data-parallel."""
    what = s.info.role
    if objective.share_teacher(acc.process_index, acc.num_processes, acc.device, f"the teacher of the {what}"):
        spread = f"the teacher's members spread over {acc.num_processes} processes"
        acc.print(f"run.parallel: members: {spread}; the {what} trains data-parallel")
        return model
    if model.size == 1:  # one network (the single baseline, a control): nothing to spread; said, not guessed
        acc.print(f"run.parallel: members: the {what} is one network; it trains data-parallel")
        return model
    if s.epoch_callbacks:
        raise UserError(f"run.parallel: members: {what}: per-epoch recorders (record_trajectory) need the whole model")
    check_members_mode(model.size, objective.member_parallel, what, acc.num_processes)
    return share_members(model, acc.process_index, acc.num_processes, acc.device, what)


def _train_epoch(p: _Prepared, objective: Objective, s: FitSetup, epoch: int) -> dict[str, float]:
    """One pass over the training data; returns the mean of each logged term."""
    acc, model, optimizer, st = p.acc, p.model, p.optimizer, p.state
    model.train()
    sums = StepTerms(acc.device)
    bar = tqdm(
        p.loader.epoch(epoch),
        total=len(p.loader),
        desc=f"{s.info.role} {epoch + 1}/{s.train.epochs}",
        disable=not (acc.is_main_process and s.run.progress),
        leave=False,
    )
    for batch in bar:
        objective.set_progress(st.global_step / max(len(p.loader) * s.train.epochs, 1))  # e.g. EnD²'s annealing
        with acc.accumulate(model):
            with acc.autocast():
                loss, terms = objective(model, batch)
            acc.backward(loss)
            optimizer.step()
            if acc.sync_gradients:
                p.scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if p.spread is not None:  # the next batch's augmentation and draws: one RNG state on every process
            p.spread.sync_rng()
        # members spread: the objective's "loss" term is the whole ensemble's (``loss`` is its members' part)
        terms = {"loss": loss.detach(), **terms}
        st.global_step += 1
        sums.add(terms, st.global_step)
        if st.global_step % s.run.log_every == 0:
            _check_loss(s, epoch, sums)
            logged = {f"train/{k}": float(v) for k, v in terms.items()}
            logged["train/lr"] = optimizer.param_groups[0]["lr"]
            acc.log(logged, step=st.global_step)
            bar.set_postfix(loss=f"{logged['train/loss']:.3f}")
    _check_loss(s, epoch, sums)
    return sums.means()


def _end_epoch(p: _Prepared, s: FitSetup, epoch: int, train_terms: dict[str, float]) -> None:
    """Validate, select, record and checkpoint the epoch just trained."""
    acc, st = p.acc, p.state
    net = acc.unwrap_model(p.model)
    finite = all(bool(torch.isfinite(q).all()) for q in net.parameters())
    if not (finite if p.spread is None else p.spread.all_true(finite)):  # spread: every process stops, or none
        # the epoch's last step blew the weights up: never checkpoint them over the last good epoch
        raise _diverged(s, epoch, f"weights are not finite after epoch {epoch + 1}, step {st.global_step}")
    val, improved = {}, False
    if s.train.validates(epoch):  # an epoch outside train.validate_last is neither validated nor selectable
        val = validation_metrics(net, s.splits.val_x, s.splits.val_y, acc.device)
        acc.log({f"val/{k}": v for k, v in val.items()}, step=st.global_step)
        score = {"best_val_nll": val["nll"], "best_val_acc": -val["acc"], "last": -epoch}[s.train.select]
        improved = score <= st.best
        if improved:
            st.best, st.best_epoch = score, epoch
    st.history.append(
        {"epoch": epoch + 1, "time_s": st.epoch_times[-1], **train_terms, **{f"val_{k}": v for k, v in val.items()}}
    )
    shown = f"  val acc {val['acc']:.4f}  nll {val['nll']:.4f}" if val else ""
    acc.print(
        f"epoch {epoch + 1}/{s.train.epochs}  loss {train_terms['loss']:.4f}{shown}  {st.epoch_times[-1]:.1f}s"
        + ("  *" if improved else "")
    )
    st.epoch = epoch + 1
    if p.spread is not None:
        _save_spread(p, s, net, {**s.info.to_json(), "epoch": epoch + 1, "val": val} if improved else None)
    elif acc.is_main_process:
        if improved:
            save_model(s.out, net, {**s.info.to_json(), "epoch": epoch + 1, "val": val})
        # with the world size that drew the batches: a members-spread resume refuses a data-parallel run's state
        drawn = {"mode": "data", "processes": acc.num_processes}
        save_state(s.out / "state.safetensors", net, p.optimizer, p.scheduler, st, drawn)
        for callback in s.epoch_callbacks:
            callback(epoch, net, s.out)
    acc.wait_for_everyone()


def _save_spread(p: _Prepared, s: FitSetup, net: nn.Module, info: dict[str, Any] | None) -> None:
    """Every process's members gathered to the main process and written there in the one-process format
    (the selected model too when ``info`` is given)."""
    whole = p.spread.whole_state(*state_parts(net, p.optimizer, p.scheduler, p.state))
    if whole is None:  # not the main process
        return
    tensors, meta = whole
    if info is not None:
        save_model(s.out, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, info)
    save_tensors(s.out / "state.safetensors", tensors, meta)


def _end_training(acc: Accelerator) -> None:
    """Close the trackers (TensorBoard) but keep the process group. Accelerate's ``end_training`` also destroys
    the group, and the next stage of ``distill run`` in this process (the students after the teacher) trains in
    that same group: under ``accelerate launch`` it failed with "Default process group has not been initialized".
    The group ends with the process."""
    for tracker in acc.trackers:
        tracker.finish()


def fit(model: nn.Module, objective: Objective, s: FitSetup) -> dict[str, Any]:
    """Train ``model`` with ``objective``; returns the summary (also written to ``summary.json``).

    Phases: prepare (Accelerate, data on the device, optimizer, schedule, resume), then per epoch train,
    validate / select / checkpoint, then the summary."""
    p = _prepare(model, objective, s)
    st = p.state
    for epoch in range(st.epoch, s.train.epochs):
        t0 = time.perf_counter()
        train_terms = _train_epoch(p, objective, s, epoch)
        st.epoch_times.append(time.perf_counter() - t0)
        _end_epoch(p, s, epoch, train_terms)
        if s.stop_after is not None and epoch + 1 >= s.stop_after:
            _end_training(p.acc)
            return {"stopped_after": epoch + 1}
    net = p.acc.unwrap_model(p.model)
    in_sync = _replicas_in_sync(p.acc, net) if p.spread is None else None  # members spread: no replicas
    _end_training(p.acc)
    summary = {
        "role": s.info.role,
        "epochs": s.train.epochs,
        "best_epoch": st.best_epoch + 1,
        "epoch_time_s_median": statistics.median(st.epoch_times) if st.epoch_times else None,
        "epoch_times_s": st.epoch_times,
        "processes": p.acc.num_processes,
        "parallel": s.run.parallel,
        "replicas_in_sync": in_sync,
        "mixed_precision": s.run.mixed_precision,
        "device": str(p.acc.device),
        "member_mode": net.member_mode_used(p.acc.device),
        "history": st.history,
        # what the model learnt from: the labelled training split, and a student's transfer images if any
        "data_seen": {"labelled_train_images": len(s.splits.train_y), "transfer": s.info.transfer},
    }
    if p.acc.is_main_process:
        atomic_write_text(s.out / "summary.json", json.dumps(summary, indent=2))
    return summary
