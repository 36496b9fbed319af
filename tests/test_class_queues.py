"""ClassQueues (semiseg.components.class_queues): U2PL's class-wise FIFO queues of features.

Hand-computable cases with D = 2 and capacities 3 and 5. Row v is the feature (v, v + 0.5), so a
queue's entries read back as the list of its values, oldest first. Covered: the newest entries
kept in order across pushes (one larger than the capacity, wrap-around), a larger class 0, one
push of many rows equals many pushes of one row, sampling only filled entries (empty class →
zeros and False), float16 storage, state_dict round trips and mismatches, and two gloo processes
whose queues equal one process pushing rank 0's rows, then rank 1's.
"""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from semiseg.components.class_queues import ClassQueues
from semiseg.errors import SemisegError

WORLD = 2


def feats(values) -> torch.Tensor:
    """Rows (v, v + 0.5) for the values v."""
    v = torch.tensor(values, dtype=torch.float32).reshape(-1)
    return torch.stack([v, v + 0.5], dim=1)


def push(queues: ClassQueues, pairs) -> None:
    """Push (class, value) pairs in the given order."""
    classes = torch.tensor([c for c, _ in pairs], dtype=torch.long)
    queues.push(feats([v for _, v in pairs]), classes)


def values(queues: ClassQueues, k: int) -> list[float]:
    """The values stored for class k, oldest first."""
    return queues.entries(k)[:, 0].tolist()


def buffers(queues: ClassQueues) -> dict:
    return {name: b.clone() for name, b in queues.named_buffers()}


# -- queue contents -------------------------------------------------------------------------------

def test_keeps_the_newest_entries_in_order_with_wrap_around_and_an_oversized_push():
    q = ClassQueues(2, 2, [3, 3])
    push(q, [(1, 1), (1, 2), (0, 10)])
    assert values(q, 0) == [10] and values(q, 1) == [1, 2]
    push(q, [(1, 3), (1, 4)])  # class 1 is full: 4 overwrites 1 in slot 0
    assert values(q, 1) == [2, 3, 4]
    assert q.storage[3:6, 0].tolist() == [4, 2, 3]  # ring slots of class 1 (offset 3)
    push(q, [(1, 5), (0, 11), (1, 6), (1, 7), (0, 12), (1, 8), (1, 9)])  # 5 rows for capacity 3
    assert values(q, 0) == [10, 11, 12]
    assert values(q, 1) == [7, 8, 9]
    push(q, [(1, 20)])
    assert values(q, 1) == [8, 9, 20]
    assert q.counts().tolist() == [3, 3]
    assert q.write_pointers.tolist() == [0, (2 + 2 + 5 + 1) % 3]
    assert torch.equal(q.entries(1)[:, 1], torch.tensor([8.5, 9.5, 20.5]))


def test_class_zero_with_a_larger_capacity():
    q = ClassQueues(3, 2, [5, 3, 3])
    assert q.storage.shape == (11, 2) and q.offsets.tolist() == [0, 5, 8]
    push(q, [(c, 10 * c + i) for i in range(7) for c in (0, 1)])  # 7 rows each for classes 0 and 1
    assert values(q, 0) == [2, 3, 4, 5, 6]
    assert values(q, 1) == [14, 15, 16]
    assert values(q, 2) == []
    assert q.counts().tolist() == [5, 3, 0]
    assert q.counts().dtype == torch.long


def test_one_push_of_many_rows_equals_many_pushes_of_one_row():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 2, generator=generator)
    classes = torch.randint(0, 3, (40,), generator=generator)
    at_once, one_by_one = ClassQueues(3, 2, [5, 3, 3]), ClassQueues(3, 2, [5, 3, 3])
    at_once.push(features[:4], classes[:4])
    at_once.push(features[4:], classes[4:])
    for i in range(40):
        one_by_one.push(features[i:i + 1], classes[i:i + 1])
    for name, buffer in buffers(at_once).items():
        assert torch.equal(buffer, dict(one_by_one.named_buffers())[name]), name


def test_push_stores_detached_features_and_accepts_no_rows():
    q = ClassQueues(2, 2, [3, 3])
    x = feats([1, 2]).requires_grad_(True)
    q.push(x * 2, torch.tensor([0, 1]))
    assert not q.storage.requires_grad and values(q, 0) == [2] and values(q, 1) == [4]
    q.push(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    assert q.counts().tolist() == [1, 1]
    with pytest.raises(ValueError, match="shape"):
        q.push(torch.zeros(2, 3), torch.tensor([0, 1]))


def test_clear_gives_a_new_queue():
    q = ClassQueues(2, 2, [3, 3])
    push(q, [(0, 1), (1, 2), (1, 3)])
    q.clear()
    fresh = ClassQueues(2, 2, [3, 3])
    for name, buffer in buffers(q).items():
        assert torch.equal(buffer, dict(fresh.named_buffers())[name]), name


# -- sampling ---------------------------------------------------------------------------------------

def filled_queues() -> ClassQueues:
    """Class 0: 2 of 5 filled (1, 2); class 1: full after wrap-around (12, 13, 14); class 2: empty."""
    q = ClassQueues(3, 2, [5, 3, 3])
    push(q, [(0, 1), (1, 10), (1, 11), (0, 2), (1, 12), (1, 13), (1, 14)])
    return q


def test_sample_draws_only_filled_entries_uniformly():
    q = filled_queues()
    sampled, non_empty = q.sample(torch.tensor([0, 1, 2]), 3000, torch.Generator().manual_seed(1))
    assert sampled.shape == (3, 3000, 2) and sampled.dtype == torch.float32
    assert non_empty.tolist() == [True, True, False]
    for k, stored in [(0, [1, 2]), (1, [12, 13, 14])]:
        drawn = sampled[k, :, 0]
        assert torch.equal(sampled[k, :, 1], drawn + 0.5)  # whole stored rows
        assert set(drawn.tolist()) == set(stored)  # every filled entry, nothing else
        for v in stored:
            share = (drawn == v).float().mean().item()
            assert abs(share - 1 / len(stored)) < 0.05, (k, v, share)
    assert torch.equal(sampled[2], torch.zeros(3000, 2))


def test_sample_with_a_mask_equals_sample_with_indices_and_is_reproducible():
    q = filled_queues()
    by_mask, mask_non_empty = q.sample(torch.tensor([False, True, True]), 50, torch.Generator().manual_seed(3))
    by_index, index_non_empty = q.sample(torch.tensor([1, 2]), 50, torch.Generator().manual_seed(3))
    assert torch.equal(by_mask, by_index) and torch.equal(mask_non_empty, index_non_empty)
    other, _ = q.sample(torch.tensor([1, 2]), 50, torch.Generator().manual_seed(4))
    assert not torch.equal(other, by_index)
    repeated, repeated_non_empty = q.sample(torch.tensor([2, 0, 0]), 7)
    assert repeated.shape == (3, 7, 2) and repeated_non_empty.tolist() == [False, True, True]


# -- float16 storage --------------------------------------------------------------------------------

def test_float16_storage_returns_float32_close_to_the_input():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(20, 4, generator=generator)
    classes = torch.arange(20) % 2
    half, full = ClassQueues(2, 4, [5, 3], dtype=torch.float16), ClassQueues(2, 4, [5, 3])
    half.push(features, classes)
    full.push(features, classes)
    assert half.storage.dtype == torch.float16
    assert half.storage.element_size() * 2 == full.storage.element_size()
    assert half.entries(0).dtype == torch.float32
    torch.testing.assert_close(half.entries(0), features[10::2], rtol=1e-3, atol=1e-3)
    sampled_half, _ = half.sample(torch.tensor([0, 1]), 20, torch.Generator().manual_seed(5))
    sampled_full, _ = full.sample(torch.tensor([0, 1]), 20, torch.Generator().manual_seed(5))
    assert sampled_half.dtype == torch.float32
    torch.testing.assert_close(sampled_half, sampled_full, rtol=1e-3, atol=1e-3)


# -- checkpoints ------------------------------------------------------------------------------------

class Owner(torch.nn.Module):
    """A stand-in for a method that owns queues: its state_dict carries them under a prefix."""

    def __init__(self, capacities=(5, 3), dim=2, dtype=torch.float32):
        super().__init__()
        self.queues = ClassQueues(len(capacities), dim, list(capacities), dtype=dtype)


def test_state_dict_round_trip_restores_buffers_and_behaviour(tmp_path):
    saved = Owner()
    push(saved.queues, [(0, 1), (1, 2), (1, 3), (1, 4), (1, 5), (0, 6)])
    assert set(saved.state_dict()) == {f"queues.{n}" for n in
                                       ("capacities", "storage", "write_pointers", "fill_counts")}
    torch.save(saved.state_dict(), tmp_path / "latest.pt")
    restored = Owner()
    restored.load_state_dict(torch.load(tmp_path / "latest.pt", weights_only=True))
    for name, buffer in buffers(saved.queues).items():
        assert torch.equal(buffer, dict(restored.queues.named_buffers())[name]), name
    for owner in (saved, restored):
        push(owner.queues, [(1, 7), (0, 8)])
    assert values(restored.queues, 1) == values(saved.queues, 1) == [4, 5, 7]
    draws = [o.queues.sample(torch.tensor([0, 1]), 30, torch.Generator().manual_seed(2))[0]
             for o in (saved, restored)]
    assert torch.equal(draws[0], draws[1])


@pytest.mark.parametrize("other, what", [
    (dict(capacities=(4, 3)), "capacities [5, 3] (saved) vs [4, 3] (now)"),
    (dict(capacities=(3, 5)), "capacities"),
    (dict(capacities=(5, 3, 3)), "capacities"),
    (dict(dim=3), "dim 2 (saved) vs 3 (now)"),
    (dict(dtype=torch.float16), "dtype torch.float32 (saved) vs torch.float16 (now)"),
])
def test_loading_other_queue_settings_is_a_one_line_error(other, what):
    state = Owner().state_dict()
    with pytest.raises(SemisegError) as error:
        Owner(**other).load_state_dict(state)
    message = str(error.value)
    assert what in message and "\n" not in message


def test_queues_move_with_the_module():
    q = ClassQueues(2, 2, [3, 3]).to(torch.device("cpu"))
    assert all(b.device.type == "cpu" for b in q.buffers())
    if torch.cuda.is_available():
        q = q.to("cuda")
        push(q, [(0, 1)])
        assert q.storage.is_cuda and q.counts().is_cuda and values(q, 0) == [1]


# -- two processes ----------------------------------------------------------------------------------

def rank_pushes(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The pushes of one rank: uneven row counts (rank 0 pushes nothing in the second push)."""
    counts = [(3, 5), (0, 4), (6, 1)]  # (rank 0, rank 1) rows per push
    pushes = []
    for step, per_rank in enumerate(counts):
        n = per_rank[rank]
        base = 1000 * step + 100 * rank
        pushes.append((feats([base + i for i in range(n)]), torch.tensor([(base + i) % 3 for i in range(n)])))
    return pushes


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        q = ClassQueues(3, 2, [5, 3, 3])
        for features, classes in rank_pushes(rank):
            q.push(features, classes)
        torch.save(q.state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_processes_hold_the_queues_of_one_process_pushing_in_rank_order(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    reference = ClassQueues(3, 2, [5, 3, 3])
    for (f0, c0), (f1, c1) in zip(rank_pushes(0), rank_pushes(1)):
        reference.push(torch.cat([f0, f1]), torch.cat([c0, c1]))
    assert reference.counts().tolist() == [5, 3, 3]
    for state in states:
        assert state.keys() == reference.state_dict().keys()
        for name, buffer in reference.state_dict().items():
            assert torch.equal(state[name], buffer), name
