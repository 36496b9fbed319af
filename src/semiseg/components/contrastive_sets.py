"""U2PL's contrastive sets: anchors, positives and negatives per class (docs/methods/u2pl.md: Contrastive loss).

Everything here lives at the representation resolution (S/4). The caller downsamples labels,
pseudo-labels and masks by nearest neighbour first (`downsample_labels`), and passes the
train-mode teacher's probabilities p' at that resolution.

Pixel layout. The pixels of the labeled and the unlabeled batch are flattened and concatenated:

    p = b·h·w + y·w + x        for labeled image b,           p in [0, P_l)
    p = P_l + b·h·w + y·w + x  for unlabeled image b,         p in [P_l, P_l + P_u)

with P_l = B_l·h·w and P_u = B_u·h·w. Per-class masks have shape (C, P); `flatten_pixels` and
`flatten_features` produce tensors in this order (concatenate the labeled and unlabeled parts).

The sets of class c (our definition, the paper's rank-based one; docs/methods/u2pl.md):
- candidates: labeled y_i = c; unlabeled ŷ_i = c and reliable_i (low entropy);
- anchors: candidates with p'_i(c) > δ_p;
- negatives: labeled y_i ∉ {c, ignore} and O_i(c) < r_l; unlabeled unreliable_i and
  r_l ≤ O_i(c) < r_h; both with p'_i(c) < δ_n;
- valid class: at least one candidate.
O_i(c) is the rank of c in p'_i sorted in descending order (`class_ranks`). The positive of c is
the mean teacher feature over its candidates (`class_prototypes`).

`released_sets` reproduces the masks of the released code, whose one-hot scatters every image
into batch slot 0 (docs/methods/u2pl.md: the compat note, `compat_onehot_bug`).

All functions are vectorised over classes: no loop over classes and no host synchronisation,
except `negative_features_for_queue`, whose output size depends on the data (one synchronisation
for all classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255

__all__ = [
    "IGNORE_INDEX",
    "ContrastiveSets",
    "class_prototypes",
    "class_ranks",
    "contrastive_sets",
    "downsample_labels",
    "flatten_features",
    "flatten_pixels",
    "label_onehot",
    "negative_features_for_queue",
    "released_onehot_bug",
    "released_sets",
    "sample_anchor_indices",
]


# -- layout helpers ------------------------------------------------------------------------------


def downsample_labels(labels: torch.Tensor, size: Union[int, Sequence[int]]) -> torch.Tensor:
    """(B, H, W) label map (or bool mask) -> (B, h, w) by nearest neighbour, same dtype.

    PyTorch's `nearest` mode: output pixel (y, x) takes input pixel (⌊y·H/h⌋, ⌊x·W/w⌋), the rule
    used for U2PL's labels and masks at S/4 (docs/methods/u2pl.md). Values are copied, never mixed,
    so the ignore label 255 stays 255.
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must have shape (B, H, W), got {tuple(labels.shape)}")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if tuple(labels.shape[1:]) == (h, w):
        return labels
    # The values are only copied; float32 holds every label below 2**24 exactly.
    resized = F.interpolate(labels[:, None].to(torch.float32), size=(h, w), mode="nearest")[:, 0]
    return resized.to(labels.dtype)


def flatten_pixels(x: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (C, B·h·w): column p = b·h·w + y·w + x (the module's pixel order)."""
    return x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)


def flatten_features(features: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) -> (B·h·w, D): row p = b·h·w + y·w + x (the module's pixel order)."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


# -- ranks and one-hots --------------------------------------------------------------------------


def class_ranks(probs: torch.Tensor) -> torch.Tensor:
    """O_i(c): the rank of class c in p'_i sorted in descending order, 0 = most likely.

    (B, C, h, w) -> (B, C, h, w) int64; at each pixel the ranks are a permutation of 0 … C−1.
    Ties are broken by class index: of two classes with equal probability the lower index ranks
    first (a stable descending sort).
    """
    if probs.dim() != 4:
        raise ValueError(f"probs must have shape (B, C, h, w), got {tuple(probs.shape)}")
    order = torch.sort(probs, dim=1, descending=True, stable=True).indices
    positions = torch.arange(probs.shape[1], device=probs.device).view(1, -1, 1, 1).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def label_onehot(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The correct one-hot: (B, h, w) -> (B, C, h, w) bool, out[b, c] = (labels[b] == c).

    Pixels labelled `ignore_index` (or any value outside [0, C)) have an all-zero row.
    """
    classes = torch.arange(num_classes, device=labels.device).view(1, -1, 1, 1)
    return (labels[:, None] == classes) & (labels[:, None] != ignore_index)


def released_onehot_bug(labels: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """The released one-hot (docs/methods/u2pl.md, compat note): (B, h, w) -> (B, C, h, w) bool.

    The released function scatters along the class dimension of a (C, B, h, w) tensor with an
    index of shape (B, 1, h, w), so every image writes into batch slot 0:
    - slot 0 = the union over all images b of one-hot(labels[b]), then zeroed where image 0 is
      `ignore_index`;
    - slots 1 … B−1 are all zero.
    Detail reproduced from the released behaviour: ignore pixels are set to class 0 *before* the
    scatter and zeroed afterwards only in their own slot, so an ignore pixel of an image b ≥ 1
    adds class 0 to the union (unless image 0 is ignore there).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must have shape (B, h, w), got {tuple(labels.shape)}")
    scattered = torch.where(labels == ignore_index, torch.zeros_like(labels), labels)
    union = label_onehot(scattered, num_classes).any(dim=0)  # (C, h, w)
    union = union & (labels[0] != ignore_index)[None]
    out = torch.zeros(labels.shape[0], num_classes, *labels.shape[1:], dtype=torch.bool, device=labels.device)
    out[0] = union
    return out


# -- the sets ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContrastiveSets:
    """(C, P) bool masks over the concatenated [labeled pixels; unlabeled pixels] (module docstring).

    - candidates: the pixels whose teacher features give the positive (class prototype) of c;
    - anchors: the candidates with p'(c) > δ_p; their student features are the anchors of c;
    - negatives: the pixels whose teacher features are pushed into the queue of c;
    - valid_classes (C,): classes with at least one candidate;
    - num_labeled: P_l, the number of labeled pixels (the first P_l columns).
    """

    candidates: torch.Tensor
    anchors: torch.Tensor
    negatives: torch.Tensor
    valid_classes: torch.Tensor
    num_labeled: int


def _check_inputs(labels, pseudo, probs_l, probs_u, reliable_u, unreliable_u, valid_u):
    if probs_l.dim() != 4 or probs_u.dim() != 4:
        raise ValueError(f"probs_l and probs_u must have shape (B, C, h, w), got {tuple(probs_l.shape)} "
                         f"and {tuple(probs_u.shape)}")
    if probs_l.shape[1:] != probs_u.shape[1:]:
        raise ValueError(f"probs_l and probs_u must share (C, h, w), got {tuple(probs_l.shape)} "
                         f"and {tuple(probs_u.shape)}")
    spatial = tuple(probs_l.shape[2:])
    if tuple(labels.shape) != (probs_l.shape[0], *spatial):
        raise ValueError(f"labels must have shape {(probs_l.shape[0], *spatial)} (B_l, h, w) at the representation "
                         f"resolution, got {tuple(labels.shape)}; downsample them with downsample_labels")
    expected_u = (probs_u.shape[0], *spatial)
    for name, t in (("pseudo", pseudo), ("reliable_u", reliable_u), ("unreliable_u", unreliable_u),
                    ("valid_u", valid_u)):
        if t is not None and tuple(t.shape) != expected_u:
            raise ValueError(f"{name} must have shape {expected_u} (B_u, h, w) at the representation resolution, "
                             f"got {tuple(t.shape)}; downsample it with downsample_labels")


def _unlabeled_validity(pseudo, valid_u, ignore_index):
    """Pixels inside the image: valid_u (if given) and pseudo != ignore_index."""
    valid = pseudo != ignore_index
    if valid_u is not None:
        valid = valid & valid_u.bool()
    return valid


def _below_delta_n(prob: torch.Tensor, delta_n: float) -> Optional[torch.Tensor]:
    # δ_n ≥ 1 disables the filter: p' ≤ 1, and a saturated p' = 1.0 must not be dropped by the
    # released default δ_n = 1, which docs/methods/u2pl.md states is a no-op.
    return None if delta_n >= 1.0 else prob < delta_n


def _assemble(cand_l, cand_u, neg_l, neg_u, prob, delta_p, delta_n, num_labeled) -> "ContrastiveSets":
    """The labeled and unlabeled halves joined; negatives cut by δ_n, anchors = candidates with p' > δ_p."""
    candidates = torch.cat([cand_l, cand_u], dim=1)
    negatives = torch.cat([neg_l, neg_u], dim=1)
    below = _below_delta_n(prob, delta_n)
    if below is not None:
        negatives = negatives & below
    anchors = candidates & (prob > delta_p)
    return ContrastiveSets(candidates=candidates, anchors=anchors, negatives=negatives,
                           valid_classes=candidates.any(dim=1), num_labeled=num_labeled)


def contrastive_sets(labels: torch.Tensor, pseudo: torch.Tensor, probs_l: torch.Tensor, probs_u: torch.Tensor,
                     reliable_u: torch.Tensor, unreliable_u: torch.Tensor, delta_p: float = 0.3,
                     delta_n: float = 1.0, low_rank: int = 3, high_rank: int = 20,
                     valid_u: Optional[torch.Tensor] = None, *, ignore_index: int = IGNORE_INDEX,
                     compat_onehot_bug: bool = False) -> ContrastiveSets:
    """U2PL's per-class candidates, anchors and negatives (docs/methods/u2pl.md: Contrastive loss).

    labels (B_l, h, w): ground truth, `ignore_index` = ignore; pseudo (B_u, h, w): ŷ of the
    eval-mode teacher (mixed); probs_l (B_l, C, h, w), probs_u (B_u, C, h, w): p' of the train-mode
    teacher; reliable_u / unreliable_u (B_u, h, w) bool: low- / high-entropy pixels; valid_u
    (B_u, h, w) bool, optional: False outside the image (padding). An unlabeled pixel with
    valid_u False or pseudo == ignore_index is never a candidate or a negative.

    Thresholds: anchors need p'(c) > delta_p (strict); negatives need p'(c) < delta_n (strict),
    and delta_n ≥ 1 applies no filter. Ranks as in `class_ranks` (ties by class index).

    compat_onehot_bug=True returns `released_sets(...)` instead (comparison runs only).
    """
    if compat_onehot_bug:
        return released_sets(labels, pseudo, probs_l, probs_u, reliable_u, unreliable_u, delta_p=delta_p,
                             delta_n=delta_n, low_rank=low_rank, high_rank=high_rank, valid_u=valid_u,
                             ignore_index=ignore_index)
    _check_inputs(labels, pseudo, probs_l, probs_u, reliable_u, unreliable_u, valid_u)
    num_classes = probs_l.shape[1]
    classes = torch.arange(num_classes, device=probs_l.device)[:, None]  # (C, 1)

    prob = torch.cat([flatten_pixels(probs_l), flatten_pixels(probs_u)], dim=1)  # (C, P)
    rank = flatten_pixels(class_ranks(torch.cat([probs_l, probs_u], dim=0)))  # (C, P)
    num_labeled = labels.numel()
    rank_l, rank_u = rank[:, :num_labeled], rank[:, num_labeled:]

    # Labeled pixels. A label outside [0, C) (the ignore label) matches no class and is no negative.
    y = labels.reshape(1, -1)
    is_class_l = y == classes  # (C, P_l)
    known_l = (y != ignore_index) & (y >= 0) & (y < num_classes)  # (1, P_l)
    cand_l = is_class_l
    neg_l = known_l & ~is_class_l & (rank_l < low_rank)

    # Unlabeled pixels.
    inside = _unlabeled_validity(pseudo, valid_u, ignore_index).reshape(1, -1)  # (1, P_u)
    reliable = reliable_u.bool().reshape(1, -1) & inside
    unreliable = unreliable_u.bool().reshape(1, -1) & inside
    cand_u = (pseudo.reshape(1, -1) == classes) & reliable
    neg_u = unreliable & (rank_u >= low_rank) & (rank_u < high_rank)

    return _assemble(cand_l, cand_u, neg_l, neg_u, prob, delta_p, delta_n, num_labeled)


def released_sets(labels: torch.Tensor, pseudo: torch.Tensor, probs_l: torch.Tensor, probs_u: torch.Tensor,
                  reliable_u: torch.Tensor, unreliable_u: torch.Tensor, delta_p: float = 0.3,
                  delta_n: float = 1.0, low_rank: int = 3, high_rank: int = 20,
                  valid_u: Optional[torch.Tensor] = None, *,
                  ignore_index: int = IGNORE_INDEX) -> ContrastiveSets:
    """The released code's masks, with its one-hot bug (docs/methods/u2pl.md, compat note).

    Same arguments and layout as `contrastive_sets`. With U_l = slot 0 of
    `released_onehot_bug(labels)` and U_u = slot 0 of `released_onehot_bug(pseudo')`, where
    pseudo' is `pseudo` with ignore_index wherever the pixel is outside the image:
    - candidates: labeled image 0 where U_l contains c; unlabeled image 0 where U_u contains c
      and the pixel is reliable; no pixel of any other image;
    - anchors: those candidates with p'(c) > δ_p;
    - negatives: no labeled pixel (the released mask asks for one-hot = 1 and one-hot = 0 at c);
      unlabeled image 0 where the pixel is unreliable, U_u contains c and r_l ≤ O(c) < r_h,
      with p'(c) < δ_n;
    - valid classes: at least one candidate.
    Ranks, thresholds and δ_n ≥ 1 as in `contrastive_sets`.
    """
    _check_inputs(labels, pseudo, probs_l, probs_u, reliable_u, unreliable_u, valid_u)
    num_classes = probs_l.shape[1]

    prob = torch.cat([flatten_pixels(probs_l), flatten_pixels(probs_u)], dim=1)  # (C, P)
    rank = flatten_pixels(class_ranks(torch.cat([probs_l, probs_u], dim=0)))  # (C, P)
    num_labeled = labels.numel()
    rank_u = rank[:, num_labeled:]

    onehot_l = flatten_pixels(released_onehot_bug(labels, num_classes, ignore_index))  # (C, P_l)
    inside = _unlabeled_validity(pseudo, valid_u, ignore_index)
    pseudo_masked = torch.where(inside, pseudo, torch.full_like(pseudo, ignore_index))
    onehot_u = flatten_pixels(released_onehot_bug(pseudo_masked, num_classes, ignore_index))  # (C, P_u)
    inside = inside.reshape(1, -1)

    cand_l = onehot_l & (labels.reshape(1, -1) != ignore_index)
    cand_u = onehot_u & reliable_u.bool().reshape(1, -1) & inside
    neg_l = torch.zeros_like(cand_l)
    neg_u = onehot_u & unreliable_u.bool().reshape(1, -1) & inside & (rank_u >= low_rank) & (rank_u < high_rank)

    return _assemble(cand_l, cand_u, neg_l, neg_u, prob, delta_p, delta_n, num_labeled)


# -- consumers of the sets -----------------------------------------------------------------------


def class_prototypes(teacher_features: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """z⁺: (P, D) teacher features and (C, P) masks -> (C, D) mean feature per class, zero rows
    for classes without a pixel (docs/methods/u2pl.md: Positive).

    One matmul, computed in (at least) fp32 with autocast off, so fp16 features over many pixels
    neither overflow nor lose precision. The result is detached (the positive carries no gradient).
    Pass `anchors` instead of `candidates` for `u2pl.positive_from: anchors`.
    """
    if teacher_features.dim() != 2 or candidates.dim() != 2 or candidates.shape[1] != teacher_features.shape[0]:
        raise ValueError(f"need teacher_features (P, D) and candidates (C, P), got {tuple(teacher_features.shape)} "
                         f"and {tuple(candidates.shape)}")
    dtype = torch.promote_types(teacher_features.dtype, torch.float32)
    with torch.autocast(device_type=teacher_features.device.type, enabled=False):
        features = teacher_features.detach().to(dtype)
        weights = candidates.to(dtype)
        sums = weights @ features
        counts = weights.sum(dim=1, keepdim=True)
        return sums / counts.clamp(min=1)


def sample_anchor_indices(anchors: torch.Tensor, num: int,
                          generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw `num` anchors per class uniformly with replacement (docs/methods/u2pl.md: Loss, step 1).

    anchors (C, P) bool -> (indices (C, num) int64 into P, has_anchors (C,) bool). Row c of
    `indices` holds pixels of anchors[c] when has_anchors[c]; for a class without anchors the row
    is 0 and must be ignored. Vectorised: a uniform rank k in [0, n_c) per draw, located with
    `searchsorted` in the row's cumulative anchor counts; no host synchronisation.

    `generator` may live on any device; the draws are made there and moved to anchors' device,
    so a seeded generator reproduces the same indices (the same seed gives different draws on
    different devices). A CPU generator with CUDA anchors costs a host-to-device copy, which
    waits for the stream: pass None or a generator on anchors' device in the training step.
    """
    if anchors.dim() != 2:
        raise ValueError(f"anchors must have shape (C, P), got {tuple(anchors.shape)}")
    num_classes, num_pixels = anchors.shape
    device = anchors.device
    cumulative = anchors.to(torch.long).cumsum(dim=1)  # (C, P), nondecreasing per row
    counts = cumulative[:, -1] if num_pixels > 0 else torch.zeros(num_classes, dtype=torch.long, device=device)
    has_anchors = counts > 0
    if num_pixels == 0:
        return torch.zeros(num_classes, num, dtype=torch.long, device=device), has_anchors
    draw_device = generator.device if generator is not None else device
    # float64: floor(u·n) stays uniform over [0, n) for the pixel counts of a batch (MPS lacks it).
    dtype = torch.float32 if device.type == "mps" else torch.float64
    u = torch.rand(num_classes, num, generator=generator, device=draw_device, dtype=dtype).to(device)
    ranks = (u * counts[:, None].to(dtype)).floor().to(torch.long)
    ranks = torch.minimum(ranks, (counts - 1).clamp(min=0)[:, None])
    # The (k+1)-th anchor of a row is the first position whose cumulative count reaches k+1.
    indices = torch.searchsorted(cumulative, ranks + 1)
    indices = torch.where(has_anchors[:, None], indices, torch.zeros_like(indices))
    return indices, has_anchors


def negative_features_for_queue(teacher_features: torch.Tensor,
                                negatives: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The rows to push into the class queues (docs/methods/u2pl.md: Queues).

    (P, D) teacher features and (C, P) negatives -> (features (Q, D), classes (Q,) int64), one row
    per True entry (c, p) of the mask, class-major then pixel order; a pixel that is a negative
    of several classes appears once per class. Features are detached. Selecting the rows is the
    one host synchronisation of the step (Q depends on the data).
    """
    if teacher_features.dim() != 2 or negatives.dim() != 2 or negatives.shape[1] != teacher_features.shape[0]:
        raise ValueError(f"need teacher_features (P, D) and negatives (C, P), got {tuple(teacher_features.shape)} "
                         f"and {tuple(negatives.shape)}")
    classes, pixels = torch.nonzero(negatives, as_tuple=True)  # row-major: class-major, then pixel
    return teacher_features.detach()[pixels], classes
