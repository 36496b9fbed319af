"""InfoNCE with cosine similarities, and U2PL's per-class average of it (docs/methods/u2pl.md).

The features arrive already sampled (anchors with replacement from each class's anchor set,
negatives from each class's queue); nothing here samples. Everything is computed in fp32 with
autocast disabled, whatever the input dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_NORM_EPS = 1e-12  # as F.normalize: x / max(‖x‖, eps), so a zero vector has cosine 0 with everything


def _fp32_unit(features: torch.Tensor) -> torch.Tensor:
    """x / max(‖x‖, eps) along the last dim, in fp32."""
    return F.normalize(features.float(), dim=-1, eps=_NORM_EPS)


def contrastive_logits(anchors: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                       temperature: float) -> torch.Tensor:
    """[cos(a, z⁺), cos(a, z⁻_1), …, cos(a, z⁻_N)] / τ for every anchor: shape (..., M, 1 + N), fp32.

    anchors (..., M, D); positive broadcastable to them ((..., M, D), (..., 1, D) or (D,));
    negatives (..., M, N, D). Column 0 holds the positive.
    """
    unit_anchors = _fp32_unit(anchors)
    positive_cos = (unit_anchors * _fp32_unit(positive)).sum(dim=-1, keepdim=True)
    negatives = negatives.float()
    # cos(a, z⁻) = (â · z⁻) / max(‖z⁻‖, eps): divides the (..., M, N) products instead of normalising a
    # copy of the (..., M, N, D) negatives.
    negative_dots = torch.einsum("...md,...mnd->...mn", unit_anchors, negatives)
    negative_cos = negative_dots / negatives.norm(dim=-1).clamp_min(_NORM_EPS)
    return torch.cat([positive_cos, negative_cos], dim=-1) / temperature


def per_anchor_info_nce(anchors: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                        temperature: float) -> torch.Tensor:
    """Per anchor, shape (..., M):

        ℓ_a = −log[exp(s⁺/τ) / (exp(s⁺/τ) + Σ_n exp(s⁻_n/τ))] = logsumexp_j(s_j/τ) − s⁺/τ

    s⁺ = cos(a, z⁺), s⁻_n = cos(a, z⁻_n); shapes as `contrastive_logits`. fp32, autocast disabled.
    """
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be positive, got {temperature}")
    if negatives.dim() != anchors.dim() + 1 or negatives.shape[-1] != anchors.shape[-1]:
        raise ValueError(f"info_nce: negatives {tuple(negatives.shape)} must be anchors {tuple(anchors.shape)} "
                         "with a negatives dimension N before the feature dimension")
    with torch.autocast(device_type=anchors.device.type, enabled=False):
        logits = contrastive_logits(anchors, positive, negatives, temperature)
        return torch.logsumexp(logits, dim=-1) - logits[..., 0]


def info_nce(anchors: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """InfoNCE averaged over the anchors (docs/methods/u2pl.md, contrastive loss step 3):

        ℓ = (1/M)·Σ_a −log[exp(cos(a, z⁺)/τ) / (exp(cos(a, z⁺)/τ) + Σ_{n=1..N} exp(cos(a, z⁻_n)/τ))]

    anchors (M, D); positive (M, D) or (D,) (broadcast to every anchor); negatives (M, N, D).
    A 0-d fp32 tensor. Gradients reach every input that requires grad; pass detached positive and
    negatives (teacher features) so that only the anchors learn.
    """
    if anchors.dim() != 2:
        raise ValueError(f"info_nce: anchors must be (M, D), got {tuple(anchors.shape)}")
    return per_anchor_info_nce(anchors, positive, negatives, temperature).mean()


def class_contrastive_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                           valid_classes: torch.Tensor, sampled_classes: torch.Tensor,
                           temperature: float = 0.5, num_valid: torch.Tensor | None = None) -> torch.Tensor:
    """U2PL's per-class average (docs/methods/u2pl.md, contrastive loss step 4):

        L_c = Σ_c s_c·ℓ_c / Σ_c v_c,  and L_c = 0 when Σ_c v_c ≤ 1

    Vectorised over the K classes:
    - anchors (K, M, D): the M anchors sampled (with replacement) for each class, student features;
    - positives (K, D): each class's prototype z⁺_c (teacher features);
    - negatives (K, M, N, D): the N negatives sampled for each anchor from the class's queue;
    - valid_classes (K,) bool, v_c: the class has at least one candidate in the local batch;
    - sampled_classes (K,) bool, s_c: the class is valid, has anchors and a non-empty queue, so its
      rows hold real samples (taken as s_c ∧ v_c).
    ℓ_c is `info_nce` of row c. A valid class that is not sampled adds 0 but counts in Σ v_c.
    The rows of unsampled classes may hold anything (zeros, NaN): they are replaced by zeros before
    use, so they give neither NaN values nor NaN gradients.
    - num_valid (0-d, optional): Σ v_c over all classes, for rows that are a subset of the classes
      (the sampled ones only, K ≤ C, as U2PL passes them); default valid_classes.sum().

    Always returns a 0-d fp32 tensor computed through the anchors, with no host synchronisation.
    When Σ v_c ≤ 1 (or no class is sampled) it is a zero that, if the anchors require grad, still
    has a grad_fn and gives them zero gradients, so the caller can always add it to the loss and
    call backward. If the anchors do not require grad, it is a constant tensor.
    """
    if anchors.dim() != 3 or negatives.dim() != 4 or positives.dim() != 2:
        raise ValueError("class_contrastive_loss: expected anchors (K, M, D), positives (K, D), negatives "
                         f"(K, M, N, D); got {tuple(anchors.shape)}, {tuple(positives.shape)}, "
                         f"{tuple(negatives.shape)}")
    valid = valid_classes.bool()
    sampled = sampled_classes.bool() & valid
    anchors = torch.where(sampled[:, None, None], anchors, torch.zeros_like(anchors))
    positives = torch.where(sampled[:, None], positives, torch.zeros_like(positives))
    negatives = torch.where(sampled[:, None, None, None], negatives, torch.zeros_like(negatives))
    per_class = per_anchor_info_nce(anchors, positives.unsqueeze(1), negatives, temperature).mean(dim=-1)
    summed = torch.where(sampled, per_class, torch.zeros_like(per_class)).sum()
    num_valid = valid.sum() if num_valid is None else num_valid
    averaged = summed / num_valid.clamp_min(1).to(summed.dtype)
    return torch.where(num_valid > 1, averaged, torch.zeros_like(averaged))
