"""The student objective: knowledge distillation on clean plus perturbed inputs (Nam et al. 2021).

L = (1 - alpha) CE(s(x), y) + alpha T^2 KL(q_T(x~) || softmax(s(x~) / T)),

with x~ from the perturbation engine (searched against the frozen teacher) and both terms every step.
A single-network student learns q_T = mean_m softmax(z_m / T), the ensemble's tempered prediction. A
BatchEnsemble student learns one-to-one: its member m from teacher member m, q_T^m = softmax(z_m / T);
its loss is the mean of the members' losses.

Transfer images (``data.transfer``: unlabelled images, the usual set-up when labels are scarce): each step the
loop draws a batch x_u of them of the labelled batch's size B (:class:`~distill.data.batches.DeviceLoader`, its
own seeded order, the same augmentation). They get the teacher's term only, never CE (they have no label):

L = (1 - alpha) CE(s(x), y) + alpha T^2 mean over the 2B rows [x~; x_u] of KL(q_T(.) || softmax(s(.) / T)),

so the teacher's term weighs a perturbed labelled image and a transfer image alike. The transfer images are
used as they are, not perturbed: the perturbation methods search from labelled images (ConfODS and others read
the label). Every student kind gets this through the same seam: ``loss()`` receives the teacher-labelled rows,
perturbed then transfer, as ``s_pert`` / ``t_pert``, which may have more rows than ``y``.
"""

from __future__ import annotations

import torch
from torch import nn

from distill.data.batches import Batch
from distill.models.contract import DistillModel
from distill.objectives.base import ObjectiveBase, Terms
from distill.objectives.teacher import member_ce
from distill.perturb.base import Perturbation, forward_no_grad
from distill.spread_teacher import spread_teacher


def kd_loss(
    student_clean: torch.Tensor,
    student_perturbed: torch.Tensor,
    teacher_perturbed: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    temperature: float,
) -> tuple[torch.Tensor, Terms]:
    """The KD loss from logits: ``student_*: (S, B, K)``, ``teacher_perturbed: (M, B, K)``, ``y: (B,)``.

    S = 1: the student learns the teacher's mean tempered probabilities. S = M: one-to-one.
    """
    s, m = student_clean.shape[0], teacher_perturbed.shape[0]
    t = temperature
    q = (teacher_perturbed.float() / t).softmax(-1)  # (M, B, K)
    if s == 1:
        q = q.mean(0, keepdim=True)
    elif s != m:
        raise ValueError(f"a {s}-member student cannot be distilled one-to-one from a {m}-member teacher")
    log_s = (student_perturbed.float() / t).log_softmax(-1)  # (S, B, K)
    kl = (q * (q.clamp_min(1e-12).log() - log_s)).sum(-1).mean(-1)  # (S,)
    ce = member_ce(student_clean, y.unsqueeze(0))  # (S,)
    loss = ((1 - alpha) * ce + alpha * t * t * kl).mean()
    return loss, {"ce": ce.mean().detach(), "kd": kl.mean().detach()}


class KD(ObjectiveBase):
    """The student objective; holds the frozen teacher and the perturbation method."""

    uses_transfer = True

    def __init__(self, teacher: nn.Module, perturb: Perturbation, alpha: float, temperature: float) -> None:
        # alpha and temperature come from a StudentCfg, whose fields carry their ranges (checked as it is built)
        self.teacher, self.perturb = teacher, perturb
        self.alpha, self.temperature = alpha, temperature
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()

    def to(self, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format) -> KD:
        # The frozen teacher runs 2-3 times per student step (clean, perturbed, input gradient), so it takes the
        # student's layout: channels-last on the CPU made the single-network students' step 1.5-1.7x faster
        # (docs/performance.md, "The student step and the teacher's layout").
        self.teacher.to(device=device, memory_format=memory_format)
        return self

    def share_teacher(self, rank: int, world: int, device: torch.device, what: str) -> bool:
        """Keep only this process's share of the teacher's members (:mod:`distill.spread_teacher`); the teacher is
        then called as before, and gathers every member's logits and input gradient from the other processes. A
        teacher of one network (self_kd's) has nothing to spread: it stays whole on every process (False)."""
        if isinstance(self.teacher, DistillModel) and self.teacher.size == 1:  # the contract, not a class
            return False
        self.teacher = spread_teacher(self.teacher, rank, world, device, what)
        return True

    def loss(
        self, s_clean: torch.Tensor, s_pert: torch.Tensor, t_pert: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, Terms]:
        """The loss from the student's logits on clean (``s_clean (S, B, K)``, labels ``y (B,)``) and on
        teacher-labelled inputs (``s_pert (S, B', K)``), and the teacher's on the latter (``t_pert (M, B', K)``):
        the perturbed inputs, then the transfer images if any (B' = B or 2B). Student kinds with another loss
        override this (:mod:`distill.students`)."""
        return kd_loss(s_clean, s_pert, t_pert, y, self.alpha, self.temperature)

    def __call__(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, Terms]:
        x, y = batch.x[0], batch.y[0]
        res = self.perturb(self.teacher, x, y)
        t_pert = res.teacher_logits_perturbed
        if t_pert is None:
            t_pert = forward_no_grad(self.teacher, res.x)
        perturbed = self.perturb.name != "none"
        parts = [x, res.x] if perturbed else [x]
        if batch.transfer is not None:
            parts.append(batch.transfer)
            t_pert = torch.cat([t_pert, forward_no_grad(self.teacher, batch.transfer)], dim=1)  # (M, 2B, K)
        # One student forward on [x; x~; x_u] (x~ when perturbed, x_u with transfer images): BatchNorm sees them
        # together. Unperturbed, the clean rows are the teacher-labelled ones too.
        logits, _ = model(torch.cat(parts) if len(parts) > 1 else x)  # (S, B * len(parts), K)
        s_clean = logits[:, : len(x)]
        s_pert = logits[:, len(x) :] if perturbed else logits
        loss, terms = self.loss(s_clean, s_pert, t_pert, y)
        terms.update({f"perturb/{k}": v for k, v in res.stats.items()})
        return loss, terms
