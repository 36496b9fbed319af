"""Step-indexed sampling: the batch of step t is a pure function of (seed, stream, t).

Every list is consumed as a stream of fresh permutations, one per pass, so
the shorter list is cycled and no image is ever dropped (released code bases
truncate a list and lose labeled images: docs/methods/unimatch.md, departures).
Each sample also carries its own augmentation seed. Because nothing depends
on how many batches were drawn before, resuming at step t or splitting a global
batch over W processes reproduces the same samples with the same augmentations.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

# Stream ids keep the labeled and unlabeled orders independent.
LABELED_STREAM = 0
UNLABELED_STREAM = 1


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([v & 0xFFFFFFFF for v in values]).generate_state(2, np.uint32).view(np.uint64)[0] >> 1)


class StepSampler:
    """Global positions [t·B, (t+1)·B) of an endless stream of permutations of range(n)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, stream: int):
        if num_items < 1:
            raise ValueError("cannot sample from an empty list")
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.stream = stream
        self._cached_pass = -1
        self._cached_perm = None

    def permutation(self, pass_index: int) -> np.ndarray:
        if pass_index != self._cached_pass:
            rng = np.random.default_rng(_mix(self.seed, self.stream, pass_index))
            self._cached_perm = rng.permutation(self.num_items)
            self._cached_pass = pass_index
        return self._cached_perm

    def global_batch(self, step: int) -> list[tuple[int, int]]:
        """[(item index, augmentation seed)] for the whole global batch of `step`."""
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            pass_index, offset = divmod(position, self.num_items)
            item = int(self.permutation(pass_index)[offset])
            out.append((item, _mix(self.seed, self.stream, 1_000_003, position)))
        return out

    def local_batch(self, step: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, int]]:
        """This process's contiguous share of the global batch of `step`."""
        batch = self.global_batch(step)
        per_rank = len(batch) // world_size
        return batch[rank * per_rank:(rank + 1) * per_rank]


    def micro_batches(self, step: int, rank: int = 0, world_size: int = 1,
                      accumulation_steps: int = 1) -> list[list[tuple[int, int]]]:
        """This process's share of `step` cut into `accumulation_steps` contiguous passes."""
        local = self.local_batch(step, rank, world_size)
        size = len(local) // accumulation_steps
        return [local[a * size:(a + 1) * size] for a in range(accumulation_steps)]


class StepBatchSampler:
    """A DataLoader `batch_sampler` yielding the local (micro-)batches of steps start..stop-1.

    With `accumulation_steps` A, each step yields A consecutive micro-batches.
    """

    def __init__(self, sampler: StepSampler, start: int, stop: int, rank: int = 0, world_size: int = 1,
                 accumulation_steps: int = 1):
        self.sampler, self.start, self.stop = sampler, start, stop
        self.rank, self.world_size = rank, world_size
        self.accumulation_steps = accumulation_steps

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.stop):
            yield from self.sampler.micro_batches(step, self.rank, self.world_size, self.accumulation_steps)

    def __len__(self) -> int:
        return max(0, self.stop - self.start) * self.accumulation_steps


class SeededItems:
    """Wraps a map-style dataset so item `(index, seed)` is produced under torch seed `seed`.

    The global torch RNG is forked, so the caller's RNG stream is untouched
    (this also holds with num_workers=0), and every augmentation drawn from
    torch's RNG depends only on the sample's own seed.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        import torch

        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
