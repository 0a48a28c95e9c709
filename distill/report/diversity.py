"""Diversity of a multi-member model (the teacher, a BatchEnsemble student): of its predictions on the test split,
and, on ``diversity_images`` test images drawn class-stratified (``evaluate.subset_seed``,
:func:`distill.data.subsets.eval_subset`; the split may be class-sorted), of its Grad-CAM maps, its input gradients
and its penultimate features.

- predictions: :func:`distill.metrics.prediction_diversity` of the member probabilities;
- CAM: :func:`distill.saliency.mean_cam_similarity` (SDDE's cosine of standardised Grad-CAM maps, true class);
- attribution: :func:`distill.metrics.attribution_similarity` of ``d z_y / d x``, the gradient of each member's
  TRUE-CLASS logit with respect to the input in [0, 1] pixel space;
- CKA: mean pairwise linear CKA of the inputs of each member's last linear layer.
For every similarity, lower means more diverse.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.data.subsets import eval_subset
from distill.metrics import attribution_similarity, mean_pairwise_cka, prediction_diversity
from distill.models.contract import DistillModel, missing_features
from distill.models.ensemble import eval_mode
from distill.report.predictions import Predictions
from distill.saliency import gradcam, mean_cam_similarity

ATTRIBUTION_TARGET = "d(true-class logit)/d(input), input in [0, 1] pixels"


def true_class_input_gradients(model: DistillModel, x: Tensor, y: Tensor, batch_size: int) -> Tensor:
    """``(M, N, C, H, W)``: each member's gradient of its true-class logit with respect to its own copy of
    the uint8 images ``x`` (scaled to [0, 1]), in eval mode."""
    device = next(model.parameters()).device
    m, out = model.size, []
    with eval_mode(model), torch.enable_grad():
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device).float().div_(255)
            yb = y[i : i + batch_size].to(device)
            xm = xb.unsqueeze(0).repeat(m, 1, 1, 1, 1).requires_grad_(True)
            logits, _ = model(xm)
            target = logits.gather(2, yb.view(1, -1, 1).expand(m, -1, 1)).sum()
            (g,) = torch.autograd.grad(target, xm)
            out.append(g.detach().cpu())
    return torch.cat(out, dim=1)


def diversity(
    model: DistillModel, preds: Predictions, x: Tensor, y: Tensor, n: int, batch_size: int, seed: int = 0
) -> tuple[dict, list]:
    """The diversity measures of ``model`` (test images ``x``, labels ``y``; the image measures on ``n`` of them
    drawn with ``seed``) and notes on what was skipped."""
    notes = []
    idx = eval_subset(y, n, seed)
    xs, ys = x[idx], y[idx]
    out: dict = {"prediction": prediction_diversity(preds.logits("test").softmax(-1), y), "images": len(xs)}
    if len(xs) == 0:
        out.update(cam_similarity=None, attribution=None, cka=None)
        return out, ["evaluate.diversity_images is 0: no CAM, attribution or CKA similarity."]
    featureless = missing_features(model)
    if featureless is not None:  # a user's module without a conv layer (distill.models.contract)
        out["cam_similarity"] = None
        notes.append(f"{type(model).__name__}: no Grad-CAM similarity: {featureless}.")
    elif model.separable_cams:
        out["cam_similarity"] = mean_cam_similarity(model, xs, ys, batch_size)
    else:
        out["cam_similarity"] = None
        notes.append(
            f"{type(model).__name__}: no Grad-CAM similarity (its members' CAM maps are slices of one tensor that "
            "Grad-CAM cannot differentiate through separately)."
        )
    out["attribution"] = attribution_similarity(true_class_input_gradients(model, xs, ys, batch_size))
    try:
        out["cka"] = mean_pairwise_cka(preds.features(xs))
    except ValueError as err:  # a user's module without a linear layer (a fully convolutional head): no CKA
        out["cka"] = None
        notes.append(f"no CKA similarity: {err}.")
    return out, notes


def member_cams(model: DistillModel, x: Tensor, y: Tensor) -> tuple[list[Tensor], Tensor]:
    """Each member's Grad-CAM ``(N, h, w)`` for the true classes of uint8 images ``x``, and the ensemble's
    predicted classes ``(N,)`` (eval mode)."""
    device = next(model.parameters()).device
    with eval_mode(model), torch.enable_grad():
        logits, feats = model(x.to(device).float().div_(255))
        cams = gradcam(logits, feats, y.to(device), create_graph=False)
    return [c.detach().cpu() for c in cams], logits.detach().softmax(-1).mean(0).argmax(-1).cpu()
