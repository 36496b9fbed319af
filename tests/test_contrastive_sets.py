"""U2PL's contrastive sets (docs/methods/u2pl.md: Contrastive loss, compat note): ranks, candidates,
anchors, negatives, the correct and the released one-hot, prototypes, anchor sampling and queue rows.

Pixel order: labeled pixels first, then unlabeled, each flattened as b·h·w + y·w + x.
"""

import itertools

import pytest
import torch

from semiseg.components.contrastive_sets import (
    ContrastiveSets,
    class_prototypes,
    class_ranks,
    contrastive_sets,
    downsample_labels,
    flatten_features,
    flatten_pixels,
    label_onehot,
    negative_features_for_queue,
    released_onehot_bug,
    released_sets,
    sample_anchor_indices,
)


def _probs(rows, h=2, w=2):
    """Per-pixel probability vectors of one image, in pixel order -> (1, C, h, w)."""
    t = torch.tensor(rows, dtype=torch.float32)  # (h*w, C)
    return t.T.reshape(1, -1, h, w)


def _mask(num_classes, num_pixels, members):
    """{class: [pixels]} -> (C, P) bool."""
    m = torch.zeros(num_classes, num_pixels, dtype=torch.bool)
    for c, pixels in members.items():
        m[c, list(pixels)] = True
    return m


def _as_sets(mask):
    return {c: sorted(mask[c].nonzero().flatten().tolist()) for c in range(mask.shape[0])}


# -- the hand-built scene (C = 4, one labeled and one unlabeled 2 x 2 image) ----------------------
#
# labeled (pixels 0-3), labels [[0, 1], [255, 2]]:
#   p0  y=0    [0.60, 0.30, 0.08, 0.02]  ranks 0,1,2,3
#   p1  y=1    [0.50, 0.25, 0.15, 0.10]  ranks 0,1,2,3
#   p2  y=255  [0.40, 0.30, 0.20, 0.10]  ignored
#   p3  y=2    [0.00, 0.00, 0.00, 1.00]  ranks 1,2,3,0 (ties by class index)
# unlabeled (pixels 4-7), pseudo [[0, 1], [2, 3]], reliable [[T, T], [F, F]], unreliable = not reliable:
#   p4  ŷ=0 reliable    [0.70, 0.10, 0.10, 0.10]  ranks 0,1,2,3
#   p5  ŷ=1 reliable    [0.42, 0.28, 0.20, 0.10]  ranks 0,1,2,3
#   p6  ŷ=2 unreliable  [0.10, 0.20, 0.30, 0.40]  ranks 3,2,1,0
#   p7  ŷ=3 unreliable  [0.05, 0.50, 0.35, 0.10]  ranks 3,0,1,2

C = 4


def _scene():
    labels = torch.tensor([[[0, 1], [255, 2]]])
    probs_l = _probs([[0.60, 0.30, 0.08, 0.02], [0.50, 0.25, 0.15, 0.10],
                      [0.40, 0.30, 0.20, 0.10], [0.00, 0.00, 0.00, 1.00]])
    pseudo = torch.tensor([[[0, 1], [2, 3]]])
    probs_u = _probs([[0.70, 0.10, 0.10, 0.10], [0.42, 0.28, 0.20, 0.10],
                      [0.10, 0.20, 0.30, 0.40], [0.05, 0.50, 0.35, 0.10]])
    reliable = torch.tensor([[[True, True], [False, False]]])
    return dict(labels=labels, pseudo=pseudo, probs_l=probs_l, probs_u=probs_u,
                reliable_u=reliable, unreliable_u=~reliable)


def test_scene_candidates_anchors_and_valid_classes():
    sets = contrastive_sets(**_scene())
    assert isinstance(sets, ContrastiveSets) and sets.num_labeled == 4
    for m in (sets.candidates, sets.anchors, sets.negatives):
        assert m.shape == (C, 8) and m.dtype == torch.bool
    # candidates: labeled y = c; unlabeled ŷ = c and reliable (p6, p7 are unreliable)
    assert _as_sets(sets.candidates) == {0: [0, 4], 1: [1, 5], 2: [3], 3: []}
    # anchors: the candidates with p'(c) > 0.3 (p1: 0.25, p3: 0.0, p5: 0.28 are not)
    assert _as_sets(sets.anchors) == {0: [0, 4], 1: [], 2: [], 3: []}
    assert sets.valid_classes.tolist() == [True, True, True, False]


def test_anchors_are_reliable_pixels_of_their_class_above_delta_p():
    scene = _scene()
    sets = contrastive_sets(**scene, delta_p=0.2)
    assert _as_sets(sets.anchors) == {0: [0, 4], 1: [1, 5], 2: [], 3: []}
    # a reliable pixel predicted c but above δ_p is no anchor of c once it becomes unreliable
    scene["reliable_u"] = torch.zeros_like(scene["reliable_u"])
    sets = contrastive_sets(**scene, delta_p=0.2)
    assert _as_sets(sets.anchors) == {0: [0], 1: [1], 2: [], 3: []}
    assert _as_sets(sets.candidates) == {0: [0], 1: [1], 2: [3], 3: []}


def test_scene_negatives_default_ranks():
    sets = contrastive_sets(**_scene())
    # labeled: y ∉ {c, 255} and rank(c) < 3   -> p0: 1, 2;  p1: 0, 2;  p3: 3, 0, 1 (p2 is ignore)
    # unlabeled: unreliable and 3 <= rank(c) < 20 -> p6: 0;  p7: 0
    assert _as_sets(sets.negatives) == {0: [1, 3, 6, 7], 1: [0, 3], 2: [0, 1], 3: [3]}


def test_unlabeled_negatives_are_unreliable_pixels_with_rank_in_range():
    sets = contrastive_sets(**_scene(), low_rank=1, high_rank=3)
    unl = sets.negatives[:, 4:]
    # p6 ranks 3,2,1,0 -> classes 2, 1;  p7 ranks 3,0,1,2 -> classes 2, 3; reliable p4, p5 never
    assert _as_sets(unl) == {0: [], 1: [2], 2: [2, 3], 3: [3]}
    # labeled with r_l = 1: only the top class, if it is not the label
    assert _as_sets(sets.negatives[:, :4]) == {0: [1], 1: [], 2: [], 3: [3]}


def test_labeled_negatives_are_hard_top_rank_classes_other_than_the_label():
    scene = _scene()
    sets = contrastive_sets(**scene)
    neg_l = sets.negatives[:, :4]
    labels = scene["labels"].flatten()
    ranks = flatten_pixels(class_ranks(scene["probs_l"]))
    for c, p in itertools.product(range(C), range(4)):
        expected = labels[p] != 255 and labels[p] != c and ranks[c, p] < 3
        assert bool(neg_l[c, p]) == bool(expected), (c, p)
    assert not neg_l[:, 2].any()  # the ignore pixel


def test_delta_n_one_is_a_no_op_and_below_one_filters():
    scene = _scene()
    default = contrastive_sets(**scene)
    explicit = contrastive_sets(**scene, delta_n=1.0)
    assert torch.equal(default.negatives, explicit.negatives)
    # the saturated p3 (p'(3) = 1.0 exactly) stays a negative of class 3 at δ_n = 1
    assert explicit.negatives[3, 3]
    filtered = contrastive_sets(**scene, delta_n=0.5)
    # p1 class 0 (0.5) and p3 class 3 (1.0) have p' >= 0.5
    assert _as_sets(filtered.negatives) == {0: [3, 6, 7], 1: [0, 3], 2: [0, 1], 3: []}
    assert torch.equal(filtered.candidates, default.candidates)
    assert torch.equal(filtered.anchors, default.anchors)


def test_pixels_outside_the_image_are_never_candidates_or_negatives():
    scene = _scene()
    valid_u = torch.tensor([[[False, True], [False, True]]])  # p4, p6 are padding
    sets = contrastive_sets(**scene, valid_u=valid_u)
    assert not sets.candidates[:, 4].any() and not sets.negatives[:, 6].any()
    assert _as_sets(sets.candidates[:, 4:]) == {0: [], 1: [1], 2: [], 3: []}
    assert _as_sets(sets.negatives[:, 4:]) == {0: [3], 1: [], 2: [], 3: []}
    # pseudo == 255 (the mixed ignore map) marks padding too
    scene["pseudo"] = torch.tensor([[[0, 1], [2, 255]]])
    sets = contrastive_sets(**scene)
    assert not sets.negatives[:, 7].any()
    assert sets.negatives[0, 6]


def test_class_ranks_descending_with_ties_by_class_index():
    probs = _probs([[0.1, 0.5, 0.2, 0.2], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0], [0.4, 0.3, 0.2, 0.1]])
    ranks = flatten_pixels(class_ranks(probs)).T.tolist()
    assert ranks == [[3, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 0], [0, 1, 2, 3]]
    assert class_ranks(probs).dtype == torch.int64 and class_ranks(probs).shape == probs.shape


def test_class_ranks_match_a_reference_sort():
    g = torch.Generator().manual_seed(0)
    probs = torch.randint(0, 4, (2, 6, 3, 3), generator=g).float()  # many ties
    ranks = class_ranks(probs)
    for b, y, x in itertools.product(range(2), range(3), range(3)):
        order = sorted(range(6), key=lambda k: (-float(probs[b, k, y, x]), k))
        assert [order.index(c) for c in range(6)] == ranks[b, :, y, x].tolist()


def _reference_sets(labels, pseudo, probs_l, probs_u, reliable, unreliable, valid_u, dp, dn, rl, rh):
    """The definitions, pixel by pixel with Python loops."""
    num_classes = probs_l.shape[1]
    pixels = []  # (label-or-None, pseudo-or-None, prob vector, reliable, unreliable, inside)
    for b, y, x in itertools.product(range(labels.shape[0]), range(labels.shape[1]), range(labels.shape[2])):
        pixels.append(("l", int(labels[b, y, x]), probs_l[b, :, y, x].tolist(), False, False, True))
    for b, y, x in itertools.product(range(pseudo.shape[0]), range(pseudo.shape[1]), range(pseudo.shape[2])):
        inside = bool(valid_u[b, y, x]) and int(pseudo[b, y, x]) != 255
        pixels.append(("u", int(pseudo[b, y, x]), probs_u[b, :, y, x].tolist(),
                       bool(reliable[b, y, x]), bool(unreliable[b, y, x]), inside))
    n = len(pixels)
    cand, anch, neg = (torch.zeros(num_classes, n, dtype=torch.bool) for _ in range(3))
    for i, (kind, lab, p, rel, unrel, inside) in enumerate(pixels):
        order = sorted(range(num_classes), key=lambda k: (-p[k], k))
        for c in range(num_classes):
            rank = order.index(c)
            if kind == "l":
                cand[c, i] = lab == c
                neg[c, i] = lab not in (c, 255) and rank < rl
            else:
                cand[c, i] = inside and lab == c and rel
                neg[c, i] = inside and unrel and rl <= rank < rh
            anch[c, i] = cand[c, i] and p[c] > dp
            neg[c, i] = neg[c, i] and (dn >= 1 or p[c] < dn)
    return cand, anch, neg


def _random_batch(seed, num_classes=5, bl=2, bu=2, h=3, w=3):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (bl, h, w), generator=g)
    labels[torch.rand(bl, h, w, generator=g) < 0.2] = 255
    pseudo = torch.randint(0, num_classes, (bu, h, w), generator=g)
    probs_l = (torch.randn(bl, num_classes, h, w, generator=g) * 2).softmax(1)
    probs_u = (torch.randn(bu, num_classes, h, w, generator=g) * 2).softmax(1)
    entropy_rank = torch.rand(bu, h, w, generator=g)
    reliable, unreliable = entropy_rank < 0.4, entropy_rank > 0.6
    valid_u = torch.rand(bu, h, w, generator=g) > 0.15
    return labels, pseudo, probs_l, probs_u, reliable, unreliable, valid_u


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("dp,dn,rl,rh", [(0.3, 1.0, 2, 4), (0.2, 0.3, 1, 5), (0.3, 1.0, 3, 20)])
def test_sets_match_a_pixelwise_reference(seed, dp, dn, rl, rh):
    batch = _random_batch(seed)
    labels, pseudo, probs_l, probs_u, reliable, unreliable, valid_u = batch
    sets = contrastive_sets(labels, pseudo, probs_l, probs_u, reliable, unreliable, delta_p=dp, delta_n=dn,
                            low_rank=rl, high_rank=rh, valid_u=valid_u)
    cand, anch, neg = _reference_sets(*batch, dp, dn, rl, rh)
    assert torch.equal(sets.candidates, cand)
    assert torch.equal(sets.anchors, anch)
    assert torch.equal(sets.negatives, neg)
    assert torch.equal(sets.valid_classes, cand.any(1))


def test_shape_mismatch_is_reported():
    scene = _scene()
    scene["labels"] = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="downsample"):
        contrastive_sets(**scene)


# -- one-hots -------------------------------------------------------------------------------------


def test_correct_onehot_of_two_label_maps_equals_the_per_image_onehots():
    a = torch.tensor([[0, 1], [2, 255]])
    b = torch.tensor([[3, 3], [1, 0]])
    both = label_onehot(torch.stack([a, b]), 4)
    assert both.shape == (2, 4, 2, 2)
    assert torch.equal(both, torch.cat([label_onehot(a[None], 4), label_onehot(b[None], 4)]))
    assert not both[0, :, 1, 1].any()  # the ignore pixel
    assert torch.equal(both[1].long(), torch.nn.functional.one_hot(b, 4).permute(2, 0, 1))
    assert torch.equal(both.sum(1), torch.tensor([[[1, 1], [1, 0]], [[1, 1], [1, 1]]]))


def test_released_onehot_puts_the_union_into_slot_zero():
    a = torch.tensor([[0, 1], [2, 255]])
    b = torch.tensor([[3, 1], [0, 2]])
    bug = released_onehot_bug(torch.stack([a, b]), 4)
    assert bug.shape == (2, 4, 2, 2)
    assert not bug[1].any()
    expected = label_onehot(a[None], 4)[0] | label_onehot(b[None], 4)[0]
    expected[:, 1, 1] = False  # zeroed where image 0 is 255
    assert torch.equal(bug[0], expected)
    assert _as_sets(flatten_pixels(bug[:1])) == {0: [0, 2], 1: [1], 2: [2], 3: [0]}


def test_released_onehot_counts_an_ignore_pixel_of_another_image_as_class_zero():
    a = torch.tensor([[1, 1], [1, 1]])
    b = torch.tensor([[255, 1], [1, 1]])
    bug = released_onehot_bug(torch.stack([a, b]), 3)
    assert bug[0, :, 0, 0].tolist() == [True, True, False]
    assert bug[0, :, 0, 1].tolist() == [False, True, False]


# -- released sets --------------------------------------------------------------------------------


def _reference_released(labels, pseudo, probs_l, probs_u, reliable, unreliable, valid_u, dp, dn, rl, rh):
    """The compat note, pixel by pixel: only image 0 of each batch, with union labels."""
    num_classes = probs_l.shape[1]
    bl, h, w = labels.shape
    bu = pseudo.shape[0]
    n = (bl + bu) * h * w
    cand, anch, neg = (torch.zeros(num_classes, n, dtype=torch.bool) for _ in range(3))
    pseudo = torch.where(valid_u & (pseudo != 255), pseudo, torch.full_like(pseudo, 255))

    def union(maps, y, x):
        if int(maps[0, y, x]) == 255:
            return set()
        return {0 if int(m[y, x]) == 255 else int(m[y, x]) for m in maps}

    for y, x in itertools.product(range(h), range(w)):
        i = y * w + x  # image 0 of the labeled batch
        p = probs_l[0, :, y, x].tolist()
        for c in union(labels, y, x):
            cand[c, i] = True
            anch[c, i] = p[c] > dp
        j = bl * h * w + y * w + x  # image 0 of the unlabeled batch
        p = probs_u[0, :, y, x].tolist()
        order = sorted(range(num_classes), key=lambda k: (-p[k], k))
        for c in union(pseudo, y, x):
            cand[c, j] = bool(reliable[0, y, x])
            anch[c, j] = cand[c, j] and p[c] > dp
            neg[c, j] = bool(unreliable[0, y, x]) and rl <= order.index(c) < rh and (dn >= 1 or p[c] < dn)
    return cand, anch, neg


@pytest.mark.parametrize("seed", range(4))
def test_released_sets_follow_the_compat_note(seed):
    batch = _random_batch(seed)
    args = dict(delta_p=0.2, delta_n=1.0, low_rank=1, high_rank=4)
    sets = released_sets(*batch[:6], valid_u=batch[6], **args)
    cand, anch, neg = _reference_released(*batch, 0.2, 1.0, 1, 4)
    assert torch.equal(sets.candidates, cand)
    assert torch.equal(sets.anchors, anch)
    assert torch.equal(sets.negatives, neg)
    assert torch.equal(sets.valid_classes, cand.any(1))
    same = contrastive_sets(*batch[:6], valid_u=batch[6], compat_onehot_bug=True, **args)
    for name in ("candidates", "anchors", "negatives", "valid_classes"):
        assert torch.equal(getattr(same, name), getattr(sets, name))


def test_released_sets_hand_built():
    # two labeled and two unlabeled 1 x 2 images, C = 3
    labels = torch.tensor([[[0, 1]], [[2, 1]]])
    pseudo = torch.tensor([[[1, 1]], [[0, 2]]])
    probs_l = torch.tensor([[0.5, 0.4, 0.1], [0.1, 0.8, 0.1]]).T.reshape(1, 3, 1, 2).repeat(2, 1, 1, 1)
    probs_u = torch.tensor([[0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]).T.reshape(1, 3, 1, 2).repeat(2, 1, 1, 1)
    reliable = torch.tensor([[[True, False]], [[True, True]]])
    sets = released_sets(labels, pseudo, probs_l, probs_u, reliable, ~reliable, low_rank=1, high_rank=3)
    # labeled image 0: pixel 0 has union {0, 2}, pixel 1 union {1}; image 1 (pixels 2, 3) gives nothing
    assert _as_sets(sets.candidates[:, :4]) == {0: [0], 1: [1], 2: [0]}
    assert _as_sets(sets.anchors[:, :4]) == {0: [0], 1: [1], 2: []}  # p'(2) = 0.1 at pixel 0
    assert not sets.negatives[:, :4].any()  # labeled pixels never give negatives
    # unlabeled image 0: pixel 4 union {1, 0} reliable; pixel 5 union {1, 2} unreliable
    assert _as_sets(sets.candidates[:, 4:]) == {0: [0], 1: [0], 2: []}
    # pixel 5: ranks 0:0, 1:1, 2:2 -> with r in [1, 3), classes 1 and 2 of its union are negatives
    assert _as_sets(sets.negatives[:, 4:]) == {0: [], 1: [1], 2: [1]}
    assert sets.valid_classes.tolist() == [True, True, True]


# -- prototypes, sampling, queue rows ------------------------------------------------------------


def test_prototypes_equal_a_hand_mean():
    feats = torch.tensor([[1.0, 2.0], [3.0, -1.0], [5.0, 0.0], [7.0, 4.0], [-2.0, 6.0]])
    cand = _mask(3, 5, {0: [0, 2], 1: [1, 2, 4]})
    proto = class_prototypes(feats, cand)
    expected = torch.tensor([[3.0, 1.0], [2.0, 5.0 / 3.0], [0.0, 0.0]])
    assert proto.shape == (3, 2)
    assert torch.allclose(proto, expected)


def test_prototypes_in_fp32_under_autocast_with_fp16_features():
    feats = torch.full((70_000, 2), 100.0, dtype=torch.float16)  # the sum overflows fp16
    cand = torch.ones(2, 70_000, dtype=torch.bool)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        proto = class_prototypes(feats, cand)
    assert proto.dtype == torch.float32
    assert torch.equal(proto, torch.full((2, 2), 100.0))


def test_prototypes_carry_no_gradient():
    feats = torch.randn(4, 3, requires_grad=True)
    assert not class_prototypes(feats, torch.ones(2, 4, dtype=torch.bool)).requires_grad


def test_anchor_sampling_returns_only_anchors_roughly_uniformly():
    anchors = _mask(3, 10, {0: [1, 4, 7], 1: [9]})
    n = 30_000
    idx, has = sample_anchor_indices(anchors, n, generator=torch.Generator().manual_seed(0))
    assert idx.shape == (3, n) and idx.dtype == torch.int64
    assert has.tolist() == [True, True, False]
    assert set(idx[0].tolist()) == {1, 4, 7}
    counts = torch.bincount(idx[0], minlength=10)[[1, 4, 7]].float() / n
    assert torch.allclose(counts, torch.full((3,), 1 / 3), atol=0.02)
    assert (idx[1] == 9).all()
    assert ((idx[2] >= 0) & (idx[2] < 10)).all()


def test_anchor_sampling_is_uniform_over_many_pixels():
    anchors = torch.zeros(2, 1000, dtype=torch.bool)
    anchors[0, ::2] = True  # 500 anchors
    anchors[1, 990:] = True
    idx, has = sample_anchor_indices(anchors, 100_000, generator=torch.Generator().manual_seed(3))
    assert has.all()
    assert anchors[0, idx[0]].all() and anchors[1, idx[1]].all()
    freq = torch.bincount(idx[0], minlength=1000)[::2].float()
    assert freq.min() > 120 and freq.max() < 290  # expected 200 each
    # the first and the last half of the anchors are drawn equally often
    assert abs(freq[:250].sum() - freq[250:].sum()) / 100_000 < 0.02


def test_anchor_sampling_is_reproducible_with_a_seeded_generator():
    g = torch.Generator().manual_seed(0)
    anchors = torch.rand(4, 50, generator=g) < 0.3
    a, _ = sample_anchor_indices(anchors, 64, generator=torch.Generator().manual_seed(7))
    b, _ = sample_anchor_indices(anchors, 64, generator=torch.Generator().manual_seed(7))
    c, _ = sample_anchor_indices(anchors, 64, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(1)
    d, _ = sample_anchor_indices(anchors, 64)
    torch.manual_seed(1)
    e, _ = sample_anchor_indices(anchors, 64)
    assert torch.equal(d, e)


def test_anchor_sampling_without_any_anchor():
    idx, has = sample_anchor_indices(torch.zeros(3, 5, dtype=torch.bool), 4)
    assert not has.any() and torch.equal(idx, torch.zeros(3, 4, dtype=torch.long))
    idx, has = sample_anchor_indices(torch.zeros(3, 0, dtype=torch.bool), 4)
    assert not has.any() and idx.shape == (3, 4)


def test_queue_rows_are_class_major_then_pixel_order():
    feats = torch.tensor([[float(p), 10.0 * p] for p in range(4)])
    negatives = _mask(3, 4, {0: [3, 2], 2: [2, 0]})
    rows, classes = negative_features_for_queue(feats, negatives)
    assert classes.tolist() == [0, 0, 2, 2]
    assert rows[:, 0].tolist() == [2.0, 3.0, 0.0, 2.0]  # pixel 2 is a negative of classes 0 and 2
    assert torch.equal(rows[:, 1], 10.0 * rows[:, 0])
    rows, classes = negative_features_for_queue(feats, torch.zeros(3, 4, dtype=torch.bool))
    assert rows.shape == (0, 2) and classes.shape == (0,)


# -- layout helpers ------------------------------------------------------------------------------


def test_flatten_pixels_and_features_share_the_pixel_order():
    x = torch.arange(2 * 3 * 2 * 4).reshape(2, 3, 2, 4)
    fp, ff = flatten_pixels(x), flatten_features(x)
    assert fp.shape == (3, 16) and ff.shape == (16, 3)
    for b, c, y, xx in itertools.product(range(2), range(3), range(2), range(4)):
        p = b * 8 + y * 4 + xx
        assert fp[c, p] == x[b, c, y, xx] == ff[p, c]


def test_downsample_labels_by_nearest_neighbour():
    labels = torch.arange(16).reshape(1, 4, 4)
    labels[0, 2, 2] = 255
    small = downsample_labels(labels, 2)
    assert small.dtype == labels.dtype
    assert torch.equal(small, labels[:, ::2, ::2])
    assert small[0, 1, 1] == 255
    odd = torch.arange(25).reshape(1, 5, 5)
    assert torch.equal(downsample_labels(odd, (2, 2)), odd[:, [0, 2]][:, :, [0, 2]])
    mask = torch.rand(2, 4, 4) > 0.5
    assert torch.equal(downsample_labels(mask, 2), mask[:, ::2, ::2])
    assert downsample_labels(labels, (4, 4)) is labels


def test_an_empty_labeled_or_unlabeled_batch():
    scene = _scene()
    only_u = dict(scene, labels=scene["labels"][:0], probs_l=scene["probs_l"][:0])
    sets = contrastive_sets(**only_u)
    assert sets.num_labeled == 0 and sets.candidates.shape == (C, 4)
    assert torch.equal(sets.candidates, contrastive_sets(**scene).candidates[:, 4:])
    only_l = dict(scene, pseudo=scene["pseudo"][:0], probs_u=scene["probs_u"][:0],
                  reliable_u=scene["reliable_u"][:0], unreliable_u=scene["unreliable_u"][:0])
    sets = contrastive_sets(**only_l)
    assert torch.equal(sets.negatives, contrastive_sets(**scene).negatives[:, :4])
