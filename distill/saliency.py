"""Differentiable saliency: Grad-CAM without hooks, the SDDE map similarity, and input gradients.

Networks return their Grad-CAM feature map from ``forward``, so Grad-CAM is an ordinary function of the
graph: with ``create_graph=True`` the maps can be trained through (double backprop), as SDDE needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gradcam(
    logits: torch.Tensor,
    feats: list[torch.Tensor] | torch.Tensor,
    labels: torch.Tensor,
    create_graph: bool = True,
) -> list[torch.Tensor] | torch.Tensor:
    """Grad-CAM maps of every member for the target ``labels``.

    For member n with feature map A_n ``(B, C, H, W)`` and logits z_n ``(B, K)``:
    S_n = sum_b z_n[b, y_b]; G_n = dS_n / dA_n; alpha_n = mean_{h,w} G_n  ``(B, C)``;
    CAM_n = ReLU(sum_c alpha_{n,c} A_{n,c})  ``(B, H, W)``.

    ``logits: (M, B, K)``, ``labels: (B,)``; ``feats``: a list of M maps (an ensemble's loop mode), giving a
    list of M CAMs, or one stacked ``(M, B, C, H, W)`` tensor (vmap mode), giving ``(M, B, H, W)``. A stacked
    map is differentiated as a whole: its slices are not on the logits' path. Members do not share
    parameters, so one ``autograd.grad`` of sum_n S_n gives every G_n at once. With ``create_graph`` the
    maps stay differentiable in the members' weights (double backprop).
    """
    scores = logits.gather(2, labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)).sum()
    if isinstance(feats, torch.Tensor):
        (g,) = torch.autograd.grad(scores, feats, create_graph=create_graph, retain_graph=True)
        return F.relu((g.mean(dim=(3, 4), keepdim=True) * feats).sum(dim=2))
    grads = torch.autograd.grad(scores, feats, create_graph=create_graph, retain_graph=True)
    return [F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1)) for g, a in zip(grads, feats)]


def standardised_maps(
    cams: list[torch.Tensor] | torch.Tensor,
    crop: int = 1,
    dtype: torch.dtype = torch.float32,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """The SDDE preprocessing: common size, border crop, per-map standardisation, L2 normalisation.

    ``cams``: M maps ``(B, H_m, W_m)``, or one stacked ``(M, B, H, W)`` tensor (iterated as M maps). Maps of
    different sizes (heterogeneous ensembles) are first resized (bilinear) to the smallest size; then ``crop``
    pixels are removed from each border, each map is standardised to zero mean and unit population std
    (+1e-6), flattened and L2-normalised.
    ``size``: the common size when some members' maps are elsewhere (members spread over processes).
    Returns ``(M, B, D)``.
    """
    h, w = size or (min(c.shape[-2] for c in cams), min(c.shape[-1] for c in cams))
    maps = []
    for c in cams:
        if c.shape[-2:] != (h, w):
            c = F.interpolate(c.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False).squeeze(1)
        if crop > 0 and h > 2 * crop and w > 2 * crop:
            c = c[:, crop:-crop, crop:-crop]
        maps.append(c)
    m = torch.stack(maps).flatten(2).to(dtype)  # (M, B, D)
    m = (m - m.mean(dim=2, keepdim=True)) / (m.std(dim=2, keepdim=True, correction=0) + 1e-6)
    return F.normalize(m, dim=2)


def pairwise_cosine(vectors: torch.Tensor) -> torch.Tensor:
    """Mean over samples and member pairs i < j of the cosine between unit vectors ``(M, B, D)``."""
    m = vectors.shape[0]
    if m < 2:
        return vectors.new_zeros(())
    gram = torch.einsum("ibd,jbd->bij", vectors, vectors)  # (B, M, M)
    iu = torch.triu_indices(m, m, offset=1, device=vectors.device)
    return gram[:, iu[0], iu[1]].mean()


def cam_similarity(cams: list[torch.Tensor] | torch.Tensor, crop: int = 1) -> torch.Tensor:
    """The SDDE diversity term: mean pairwise cosine of standardised Grad-CAM maps (differentiable)."""
    return pairwise_cosine(standardised_maps(cams, crop))


def input_gradients(logits: torch.Tensor, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """d(sum over batch and classes of member n's logits)/dx for each member: ``(M, B, C, H, W)``.

    ``logits: (M, B, K)`` computed from ``x: (M, B, C, H, W)`` (one copy of the input per member, so
    each member's gradient is separate); ``x`` must require grad.
    """
    (g,) = torch.autograd.grad(logits.sum(), x, create_graph=create_graph, retain_graph=True)
    return g


def mean_cam_similarity(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256, crop: int = 1
) -> float:
    """Mean pairwise CAM cosine of an ensemble on uint8 images ``x`` with labels ``y`` (eval mode, true
    labels): the SDDE diversity measure, lower = more diverse saliency."""
    from distill.models.ensemble import eval_mode
    from distill.parallel import spread_of

    device = next(model.parameters()).device
    spread = spread_of(model)  # a share of the members (run.parallel: members): the others' maps are gathered
    total, n = 0.0, 0
    with eval_mode(model):
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device).float().div_(255)
            yb = y[i : i + batch_size].to(device)
            with torch.enable_grad():
                logits, feats = model(xb)
                cams = [c.detach() for c in gradcam(logits, feats, yb, create_graph=False)]
            if spread is None:
                sim = cam_similarity(cams, crop)
            else:
                maps = standardised_maps(cams, crop, size=spread.smallest_map(cams))  # (M_own, B, D)
                sim = pairwise_cosine(spread.gather_detached(maps))
            total += float(sim) * len(xb)
            n += len(xb)
    return total / max(n, 1)
