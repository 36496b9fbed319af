"""semiseg.components.collaborative_labels: CPCL's K, ω, ŷ∩ / ŷ∪, β and the weighted CE (docs/methods/cpcl.md).

Hand-built 2×3 examples with C = 3 (K with its +I and without the invalid pixel, ω, the labels with
a tie that goes to branch 2 and disagreements that ω resolves either way, β), a brute-force
reference on random maps, the weighted CE (255 targets count in the denominator), fp16/bf16 inputs,
no `.item()` in the module, no host sync on CUDA (skipped without a GPU), and K summed over two
gloo ranks = one process on the concatenated batch, with the identity added once.
"""

import inspect
import math
from fractions import Fraction

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from semiseg.components import collaborative_labels as cl_module
from semiseg.components.collaborative_labels import (collaborative_labels, disagreement_matrix,
                                                     disagreement_weights)
from semiseg.components.losses import masked_ce as weighted_ce  # Σ v·β·CE / Σ v, 255 adds 0

C = 3
EPS = 1e-6

# -- example A: a tie (classes 0 and 2) and ω favouring branch 1 --------------------------------------
#   pixel:   (0,0)   (0,1)   (0,2)   (1,0)   (1,1)   (1,2)
#   ŷ1, ŷ2:  0, 2    2, 0    0, 1    2, 1    1, 1    1, 0 (invalid)
PRED1_A = torch.tensor([[[0, 2, 0], [2, 1, 1]]])
PRED2_A = torch.tensor([[[2, 0, 1], [1, 1, 0]]])
VALID_A = torch.tensor([[[True, True, True], [True, True, False]]])
# Valid pairs (0,2), (2,0), (0,1), (2,1), (1,1); the invalid (1,0) is not counted; + I:
K_A = torch.tensor([[1, 1, 1],
                    [0, 2, 0],
                    [1, 1, 1]])
# rows 3, 2, 3; columns 2, 4, 2; diagonal 1, 2, 1:
# I_0 = (2−1)/2 + (3−1)/3 = 7/6, I_1 = (4−2)/4 + (2−2)/2 = 1/2, I_2 = 7/6; Σ I = 17/6.
I_A = [Fraction(7, 6), Fraction(1, 2), Fraction(7, 6)]
# ŷ∩: agreement only at (1,1). ŷ∪: (0,0) tie ω0 = ω2 -> ŷ2 = 2; (0,1) tie -> ŷ2 = 0; (0,2) ω0 > ω1 -> ŷ1 = 0;
# (1,0) ω2 > ω1 -> ŷ1 = 2; (1,1) agree -> 1; (1,2) invalid -> 255.
INTER_A = torch.tensor([[[255, 255, 255], [255, 1, 255]]])
UNION_A = torch.tensor([[[2, 0, 0], [2, 1, 255]]])
# the disagreements resolved to ŷ2:
FROM_BRANCH2_A = torch.tensor([[[True, True, False], [False, False, False]]])

# -- example B: ω strictly favouring branch 2 ------------------------------------------------------------
#   ŷ1, ŷ2:  0, 0    0, 1    1, 1    |    2, 2    1, 2    0, 2 (invalid)
PRED1_B = torch.tensor([[[0, 0, 1], [2, 1, 0]]])
PRED2_B = torch.tensor([[[0, 1, 1], [2, 2, 2]]])
VALID_B = torch.tensor([[[True, True, True], [True, True, False]]])
K_B = torch.tensor([[2, 1, 0],
                    [0, 2, 1],
                    [0, 0, 2]])
# rows 3, 3, 2; columns 2, 3, 3: I = (1/3, 2/3, 1/3), Σ I = 4/3, ω = (1/4, 1/2, 1/4)/(1 + 3/4·1e-6).
I_B = [Fraction(1, 3), Fraction(2, 3), Fraction(1, 3)]
# (0,1): ω0 < ω1 -> ŷ2 = 1 (strictly); (1,1): ω1 > ω2 -> ŷ1 = 1.
UNION_B = torch.tensor([[[0, 1, 1], [2, 1, 255]]])
INTER_B = torch.tensor([[[0, 255, 1], [2, 255, 255]]])

CONF1 = torch.tensor([[[0.9, 0.8, 0.7], [0.6, 0.5, 0.4]]])
CONF2 = torch.tensor([[[0.5, 0.6, 0.7], [0.8, 0.9, 0.95]]])


def logits_for(pred: torch.Tensor, conf: torch.Tensor, num_classes: int = C) -> torch.Tensor:
    """(B, C, H, W) logits whose softmax puts `conf` on `pred` and (1 − conf)/(C − 1) on every other class."""
    rest = ((1 - conf) / (num_classes - 1)).unsqueeze(1).expand(-1, num_classes, -1, -1)
    probs = torch.where(F.one_hot(pred, num_classes).permute(0, 3, 1, 2).bool(), conf.unsqueeze(1), rest)
    return probs.log()


def omega_by_hand(indicator):
    total = float(sum(indicator))
    return torch.tensor([float(i) / (total + EPS) for i in indicator], dtype=torch.float64)


# -- K and ω -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pred1, pred2, valid, expected", [(PRED1_A, PRED2_A, VALID_A, K_A),
                                                            (PRED1_B, PRED2_B, VALID_B, K_B)])
def test_matrix_by_hand_counts_valid_pixels_plus_identity(pred1, pred2, valid, expected):
    k = disagreement_matrix(pred1, pred2, valid, C)
    assert k.dtype == torch.long and k.shape == (C, C)
    assert torch.equal(k, expected)
    assert int(k.sum()) == int(valid.sum()) + C  # the identity once, the invalid pixel not at all
    everything = disagreement_matrix(pred1, pred2, torch.ones_like(valid), C)
    assert int((everything - k).sum()) == 1  # counting the invalid pixel would add it


def test_matrix_with_no_valid_pixel_is_the_identity():
    k = disagreement_matrix(PRED1_A, PRED2_A, torch.zeros_like(VALID_A), C)
    assert torch.equal(k, torch.eye(C, dtype=torch.long))
    assert torch.equal(disagreement_weights(k), torch.zeros(C, dtype=torch.float64))


@pytest.mark.parametrize("matrix, indicator", [(K_A, I_A), (K_B, I_B)])
def test_omega_by_hand(matrix, indicator):
    omega = disagreement_weights(matrix)
    assert omega.dtype == torch.float64
    assert torch.allclose(omega, omega_by_hand(indicator), rtol=0, atol=1e-15)


def test_omega_reads_rows_as_branch_1_and_columns_as_branch_2():
    # Transposing K swaps the roles of rows and columns; I_c adds both terms, so ω is unchanged,
    # while a K with one off-diagonal entry gives its row and column classes the same I.
    k = torch.tensor([[1, 3, 0], [0, 1, 0], [0, 0, 1]])
    omega = disagreement_weights(k)
    # rows 4, 1, 1; columns 1, 4, 1: I_0 = 0 + 3/4, I_1 = 3/4 + 0, I_2 = 0.
    assert torch.allclose(omega, omega_by_hand([Fraction(3, 4), Fraction(3, 4), 0]), rtol=0, atol=1e-15)
    assert torch.equal(disagreement_weights(k.T), omega)


# -- labels and weights -------------------------------------------------------------------------------------

def test_labels_by_hand_tie_goes_to_branch_2_and_omega_can_favour_branch_1():
    out = collaborative_labels(logits_for(PRED1_A, CONF1), logits_for(PRED2_A, CONF2), VALID_A, C)
    assert torch.equal(out.matrix, K_A)
    assert torch.allclose(out.omega, omega_by_hand(I_A), rtol=0, atol=1e-15)
    assert out.omega[0] == out.omega[2]  # the tie is exact
    assert out.intersection.dtype == torch.long and torch.equal(out.intersection, INTER_A)
    assert out.union.dtype == torch.long and torch.equal(out.union, UNION_A)
    assert math.isclose(float(out.overlap), 4 / 8)  # diagonal 1 + 2 + 1 over 5 valid pixels + 3


def test_labels_by_hand_omega_favours_branch_2():
    out = collaborative_labels(logits_for(PRED1_B, CONF1), logits_for(PRED2_B, CONF2), VALID_B, C)
    assert torch.equal(out.matrix, K_B)
    assert torch.allclose(out.omega, omega_by_hand(I_B), rtol=0, atol=1e-15)
    assert torch.equal(out.intersection, INTER_B)
    assert torch.equal(out.union, UNION_B)
    assert math.isclose(float(out.overlap), 6 / 8)


def test_beta_by_hand():
    out = collaborative_labels(logits_for(PRED1_A, CONF1), logits_for(PRED2_A, CONF2), VALID_A, C)
    mean = (CONF1 + CONF2) / 2
    assert out.beta_inter.dtype == torch.float32 and out.beta_union.dtype == torch.float32
    assert torch.allclose(out.beta_inter, mean, atol=1e-6)
    # (0,0), (0,1): ties resolved to branch 2 -> c2 = 0.5, 0.6; (0,2), (1,0): branch 1 -> c1 = 0.7, 0.6;
    # (1,1): agreement -> (0.5 + 0.9)/2 = 0.7.
    expected = torch.tensor([0.5, 0.6, 0.7, 0.6, 0.7])  # the valid pixels in row-major order
    assert torch.allclose(out.beta_union[VALID_A], expected, atol=1e-6)
    chosen = torch.where(FROM_BRANCH2_A, CONF2, CONF1)
    disagree = PRED1_A != PRED2_A
    assert torch.allclose(out.beta_union[disagree & VALID_A], chosen[disagree & VALID_A], atol=1e-6)


def reference(logits1, logits2, valid, num_classes):
    """A loop over pixels, with the released recipe: K from appended 0…C−1 label lists, ω, then the rules."""
    p1, p2 = logits1.float().softmax(1), logits2.float().softmax(1)
    c1, y1 = p1.max(1)
    c2, y2 = p2.max(1)
    k = [[0] * num_classes for _ in range(num_classes)]
    pairs = [(int(a), int(b)) for a, b, v in zip(y1.flatten(), y2.flatten(), valid.flatten()) if v]
    for a, b in pairs + [(c, c) for c in range(num_classes)]:
        k[a][b] += 1
    rows = [sum(k[c]) for c in range(num_classes)]
    cols = [sum(k[a][c] for a in range(num_classes)) for c in range(num_classes)]
    ind = [(cols[c] - k[c][c]) / cols[c] + (rows[c] - k[c][c]) / rows[c] for c in range(num_classes)]
    omega = [i / (sum(ind) + 1e-6) for i in ind]
    inter, union, b_u = y1.clone(), y1.clone(), (c1 + c2) / 2
    for idx in range(y1.numel()):
        a, b = int(y1.flatten()[idx]), int(y2.flatten()[idx])
        if not valid.flatten()[idx]:
            inter.view(-1)[idx] = union.view(-1)[idx] = 255
        elif a != b:
            inter.view(-1)[idx] = 255
            first = omega[a] > omega[b]
            union.view(-1)[idx] = a if first else b
            b_u.view(-1)[idx] = (c1 if first else c2).flatten()[idx]
    return torch.tensor(k), torch.tensor(omega, dtype=torch.float64), inter, union, b_u


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_a_pixel_loop_on_random_maps(seed):
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = 2, 4, 5, 6
    logits1 = torch.randn(b, c, h, w, generator=g) * 2
    logits2 = torch.randn(b, c, h, w, generator=g) * 2
    valid = torch.rand(b, h, w, generator=g) > 0.2
    k, omega, inter, union, b_u = reference(logits1, logits2, valid, c)
    out = collaborative_labels(logits1, logits2, valid, c)
    assert torch.equal(out.matrix, k)
    assert torch.allclose(out.omega, omega, rtol=0, atol=1e-12)
    assert torch.equal(out.intersection, inter)
    assert torch.equal(out.union, union)
    assert torch.allclose(out.beta_union[valid], b_u[valid], atol=1e-6)  # invalid pixels: label 255, β unused
    assert math.isclose(float(out.overlap), float(k.trace()) / float(k.sum()))


def test_outputs_carry_no_gradient():
    logits1 = logits_for(PRED1_A, CONF1).requires_grad_(True)
    logits2 = logits_for(PRED2_A, CONF2).requires_grad_(True)
    out = collaborative_labels(logits1 * 1.0, logits2 * 1.0, VALID_A, C)
    for name, tensor in out._asdict().items():
        assert not tensor.requires_grad and tensor.grad_fn is None, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_logits_give_fp32_outputs(dtype):
    logits1 = logits_for(PRED1_A, CONF1).to(dtype)
    logits2 = logits_for(PRED2_A, CONF2).to(dtype)
    out = collaborative_labels(logits1, logits2, VALID_A, C)
    assert out.beta_inter.dtype == torch.float32 and out.beta_union.dtype == torch.float32
    assert out.omega.dtype == torch.float64 and out.overlap.dtype == torch.float64
    assert torch.equal(out.intersection, INTER_A) and torch.equal(out.union, UNION_A)
    assert torch.allclose(out.beta_inter, (CONF1 + CONF2) / 2, atol=1e-2)
    loss = weighted_ce(logits1, out.union, out.beta_union, VALID_A)
    assert loss.dtype == torch.float32


def test_mismatched_logits_raise():
    with pytest.raises(ValueError):
        collaborative_labels(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), 3)
    with pytest.raises(ValueError):
        collaborative_labels(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool), 4)


# -- host synchronisation -------------------------------------------------------------------------------------

def test_module_has_no_item_or_host_reads():
    source = inspect.getsource(cl_module)
    for forbidden in (".item(", ".cpu(", ".tolist(", ".nonzero(", "bincount("):
        assert forbidden not in source, forbidden


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda():
    g = torch.Generator().manual_seed(0)
    logits1 = torch.randn(2, 5, 16, 16, generator=g).cuda()
    logits2 = torch.randn(2, 5, 16, 16, generator=g).cuda()
    valid = (torch.rand(2, 16, 16, generator=g) > 0.1).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = collaborative_labels(logits1, logits2, valid, 5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    k, *_ = reference(logits1.cpu(), logits2.cpu(), valid.cpu(), 5)
    assert torch.equal(out.matrix.cpu(), k)


# -- weighted CE ----------------------------------------------------------------------------------------------

def test_weighted_ce_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, C, 2, 3, generator=g, requires_grad=True)
    target = torch.tensor([[[0, 255, 2], [1, 1, 255]]])
    weight = torch.tensor([[[0.5, 0.9, 1.0], [0.25, 0.75, 0.3]]])
    valid = torch.tensor([[[True, True, True], [True, False, True]]])
    log_p = logits.detach().log_softmax(1)
    # valid, non-255 pixels: (0,0), (0,2), (1,0); the 255 pixels (0,1), (1,2) count in the denominator.
    numerator = (0.5 * -log_p[0, 0, 0, 0] + 1.0 * -log_p[0, 2, 0, 2] + 0.25 * -log_p[0, 1, 1, 0])
    loss = weighted_ce(logits, target, weight, valid)
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert torch.allclose(loss, numerator / 5, atol=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert torch.equal(logits.grad[0, :, 0, 1], torch.zeros(C))  # 255 pixel: no gradient
    assert torch.equal(logits.grad[0, :, 1, 1], torch.zeros(C))  # invalid pixel: no gradient


def test_weighted_ce_without_valid_pixels_is_zero():
    logits = torch.randn(1, C, 2, 3)
    loss = weighted_ce(logits, INTER_A, torch.ones(1, 2, 3), torch.zeros(1, 2, 3, dtype=torch.bool))
    assert float(loss) == 0.0


# -- two processes ---------------------------------------------------------------------------------------------

WORLD = 2
NUM_CLASSES = 4


def global_batch():
    g = torch.Generator().manual_seed(7)
    logits1 = torch.randn(4, NUM_CLASSES, 5, 6, generator=g) * 2
    logits2 = torch.randn(4, NUM_CLASSES, 5, 6, generator=g) * 2
    valid = torch.rand(4, 5, 6, generator=g) > 0.25
    return logits1, logits2, valid


SHARDS = (slice(0, 3), slice(3, 4))  # uneven: 3 + 1 images


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        logits1, logits2, valid = (t[SHARDS[rank]] for t in global_batch())
        out = collaborative_labels(logits1, logits2, valid, NUM_CLASSES)
        torch.save(out._asdict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("collaborative_labels")
    mp.spawn(_worker, args=(str(tmp / "rendezvous"), str(tmp)), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.slow
def test_two_ranks_sum_counts_then_add_the_identity_once(two_ranks):
    logits1, logits2, valid = global_batch()
    single = collaborative_labels(logits1, logits2, valid, NUM_CLASSES)
    assert int(single.matrix.sum()) == int(valid.sum()) + NUM_CLASSES
    for rank, result in enumerate(two_ranks):
        assert torch.equal(result["matrix"], single.matrix)  # identity once, not once per rank
        assert torch.equal(result["omega"], single.omega)
        assert torch.equal(result["overlap"], single.overlap)
        shard = SHARDS[rank]
        assert torch.equal(result["intersection"], single.intersection[shard])
        assert torch.equal(result["union"], single.union[shard])
        assert torch.equal(result["beta_union"], single.beta_union[shard])
