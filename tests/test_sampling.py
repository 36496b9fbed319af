"""Step-indexed sampling: every image used, same batches on resume and for any world size."""

import numpy as np
import torch

from semiseg.data.sampling import SeededItems, StepBatchSampler, StepSampler


def test_every_item_appears_once_per_pass():
    sampler = StepSampler(num_items=10, batch_size=4, seed=3, stream=0)
    drawn = [i for step in range(5) for i, _ in sampler.global_batch(step)]  # 20 = two passes
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert drawn[:10] != drawn[10:]  # each pass is reshuffled


def test_shorter_list_is_cycled_without_dropping(tmp_path):
    # no image dropped: with 7 labeled and 9 unlabeled, the first 9 labeled draws cover all 7 labeled ids
    labeled = StepSampler(7, 3, seed=0, stream=0)
    first = [i for step in range(3) for i, _ in labeled.global_batch(step)]
    assert set(first) == set(range(7))


def test_batches_depend_only_on_step():
    a = StepSampler(13, 4, seed=1, stream=1)
    b = StepSampler(13, 4, seed=1, stream=1)
    late = b.global_batch(9)  # b jumps straight to step 9, as after a resume
    for step in range(9):
        a.global_batch(step)
    assert a.global_batch(9) == late


def test_streams_and_seeds_differ():
    assert StepSampler(50, 8, 0, 0).global_batch(0) != StepSampler(50, 8, 0, 1).global_batch(0)
    assert StepSampler(50, 8, 0, 0).global_batch(0) != StepSampler(50, 8, 1, 0).global_batch(0)


def test_world_size_splits_the_global_batch():
    sampler = StepSampler(20, 8, seed=0, stream=0)
    shares = [sampler.local_batch(2, rank, 2) for rank in range(2)]
    assert shares[0] + shares[1] == sampler.global_batch(2)
    batches = list(StepBatchSampler(sampler, start=1, stop=4))
    assert batches == [sampler.global_batch(s) for s in (1, 2, 3)]


def test_seeded_items_are_reproducible_and_leave_the_caller_rng_alone():
    class Noisy:
        def __len__(self):
            return 3

        def __getitem__(self, index):
            return torch.rand(2) + index

    items = SeededItems(Noisy())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = items[(1, 1234)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, items[(1, 1234)])
    assert not torch.equal(first, items[(1, 999)])
    assert np.allclose(first.numpy() - 1, SeededItems(Noisy())[(0, 1234)].numpy())


def test_micro_batches_over_ranks_and_passes_rebuild_the_global_batch():
    """W ranks x A passes: the passes of rank 0, then rank 1, ... are the global batch in order."""
    sampler = StepSampler(30, 8, seed=4, stream=1)
    for world, passes in ((1, 1), (1, 4), (2, 2), (4, 2), (8, 1)):
        parts = [micro for rank in range(world) for micro in sampler.micro_batches(5, rank, world, passes)]
        assert len(parts) == world * passes and {len(p) for p in parts} == {8 // (world * passes)}
        assert [item for part in parts for item in part] == sampler.global_batch(5)
    loader_order = list(StepBatchSampler(sampler, start=2, stop=4, rank=1, world_size=2, accumulation_steps=2))
    assert loader_order == sampler.micro_batches(2, 1, 2, 2) + sampler.micro_batches(3, 1, 2, 2)
