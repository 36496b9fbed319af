"""Class-wise FIFO queues of feature vectors: U2PL's memory bank of negatives (docs/methods/u2pl.md: Queues).

One fixed-capacity ring buffer per class, all classes stored in ONE flat buffer of
sum(capacities) rows with per-class offsets, a per-class write pointer and a per-class fill count.
Every tensor is a registered buffer, so the queues move with `.to(device)` and are saved in (and
restored bit for bit from) the owning method's `state_dict()`.

Layout of class k: rows `offsets[k] .. offsets[k] + capacities[k] - 1` of `storage`. Writes start
at slot 0 and wrap around, so while the queue is not full its entries are slots `0 .. fill - 1`,
and once full every slot is an entry: the filled entries are always slots `[0, fill)`. The oldest
entry is at slot `(pointer - fill) mod capacity`, the newest just before `pointer`.

Push and sample treat all classes at once with tensor operations (no loop over classes):
- `push` gathers the new rows of all ranks (`semiseg.collectives.all_gather_rows`, rank order),
  ranks each row among the rows of its class (a stable sort), keeps the newest `capacity` rows of
  each class and scatters them into their ring slots with one `index_copy_`. Selecting the kept
  rows is the only host-device synchronisation (one per push, not per class).
- `sample` draws one uniform number per requested sample and scales it by the class's fill count;
  it never synchronises when given class indices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from semiseg import collectives
from semiseg.errors import SemisegError


class ClassQueues(nn.Module):
    """Per-class FIFO queues of `dim`-dimensional features with capacities `capacities[k]`.

    `dtype` is the storage type (float16 halves the memory); sampled features are always float32.
    The queues are identical on every rank: `push` appends the rows of all ranks in rank order.
    """

    def __init__(self, num_classes: int, dim: int, capacities: Sequence[int],
                 dtype: torch.dtype = torch.float32, *, device: torch.device | str | None = None):
        super().__init__()
        _check_arguments(num_classes, dim, capacities, dtype)
        capacity_tensor = torch.tensor([int(c) for c in capacities], dtype=torch.long, device=device)
        self.num_classes, self.dim = num_classes, dim
        self.register_buffer("capacities", capacity_tensor)
        self.register_buffer("offsets", torch.cumsum(capacity_tensor, 0) - capacity_tensor, persistent=False)
        self.register_buffer("storage", torch.zeros(int(sum(capacities)), dim, dtype=dtype, device=device))
        self.register_buffer("write_pointers", torch.zeros(num_classes, dtype=torch.long, device=device))
        self.register_buffer("fill_counts", torch.zeros(num_classes, dtype=torch.long, device=device))

    # -- writing ------------------------------------------------------------------------------------

    @torch.no_grad()
    def push(self, features: torch.Tensor, classes: torch.Tensor) -> None:
        """Append row i of `features` (P, D) to the queue of `classes[i]` (P,), for the rows of every rank.

        The rows of all ranks are concatenated in rank order, and the row order is the arrival
        order. Each queue keeps its newest `capacity` entries. Features are stored detached, in
        the storage dtype. `classes` must lie in [0, num_classes) (not checked: that would cost a
        device synchronisation).
        """
        self._check_push_shapes(features, classes)
        features = features.detach().to(device=self.storage.device, dtype=self.storage.dtype)
        classes = classes.detach().to(device=self.storage.device, dtype=torch.long)
        features = collectives.all_gather_rows(features)
        classes = collectives.all_gather_rows(classes)
        if classes.shape[0] == 0:
            return
        arrivals = self._arrivals_per_class(classes)
        rank_in_class = self._rank_within_class(classes, arrivals)
        kept = torch.nonzero(rank_in_class >= arrivals[classes] - self.capacities[classes]).squeeze(1)
        kept_classes = classes[kept]
        slots = (self.write_pointers[kept_classes] + rank_in_class[kept]) % self.capacities[kept_classes]
        self.storage.index_copy_(0, self.offsets[kept_classes] + slots, features[kept])
        self.write_pointers.copy_((self.write_pointers + arrivals) % self.capacities)
        self.fill_counts.copy_(torch.minimum(self.fill_counts + arrivals, self.capacities))

    def _check_push_shapes(self, features: torch.Tensor, classes: torch.Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape (P, {self.dim}), got {tuple(features.shape)}")
        if classes.shape != (features.shape[0],):
            raise ValueError(f"classes must have shape ({features.shape[0]},), got {tuple(classes.shape)}")

    def _arrivals_per_class(self, classes: torch.Tensor) -> torch.Tensor:
        """(C,) number of new rows per class (scatter_add: unlike bincount, no synchronisation)."""
        arrivals = torch.zeros(self.num_classes, dtype=torch.long, device=classes.device)
        return arrivals.scatter_add_(0, classes, torch.ones_like(classes))

    @staticmethod
    def _rank_within_class(classes: torch.Tensor, arrivals: torch.Tensor) -> torch.Tensor:
        """(P,) index of each row among the rows of its class, in arrival order (0 = oldest)."""
        order = torch.sort(classes, stable=True).indices
        first_of_class = torch.cumsum(arrivals, 0) - arrivals
        sorted_rank = torch.arange(classes.shape[0], device=classes.device) - first_of_class[classes[order]]
        return torch.empty_like(sorted_rank).index_copy_(0, order, sorted_rank)

    @torch.no_grad()
    def clear(self) -> None:
        """Empty every queue (and zero the storage, so a cleared queue equals a new one)."""
        self.storage.zero_()
        self.write_pointers.zero_()
        self.fill_counts.zero_()

    # -- reading ------------------------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, classes_or_mask: torch.Tensor, num: int,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`num` features per requested class, uniform with replacement among its filled entries.

        `classes_or_mask`: (K,) class indices, or a (C,) bool mask of classes (its K true entries,
        in class order; a mask costs one device synchronisation, indices none). Returns the
        features (K, num, D) float32 and a (K,) bool mask of non-empty classes; an empty class
        gives zeros. The draws come from `generator` (on any device) or the default generator:
        ranks that must draw the same samples need the same generator state (in U2PL each rank
        samples negatives for its own anchors, so a per-rank generator is fine).
        """
        classes = self._class_indices(classes_or_mask)
        fill = self.fill_counts[classes]
        uniform = self._uniform(classes.shape[0], num, generator)
        within = (uniform * fill.unsqueeze(1)).floor().long()
        within = torch.minimum(within, fill.unsqueeze(1) - 1).clamp_(min=0)  # rounding up to `fill`; empty
        rows = self.offsets[classes].unsqueeze(1) + within
        non_empty = fill > 0
        features = torch.where(non_empty.view(-1, 1, 1), self.storage[rows].float(), 0.0)
        return features, non_empty

    def _class_indices(self, classes_or_mask: torch.Tensor) -> torch.Tensor:
        selection = torch.as_tensor(classes_or_mask, device=self.storage.device)
        if selection.dtype == torch.bool:
            if selection.shape != (self.num_classes,):
                raise ValueError(f"a class mask must have shape ({self.num_classes},), got {tuple(selection.shape)}")
            return torch.nonzero(selection).squeeze(1)
        if selection.dim() != 1:
            raise ValueError(f"class indices must be one-dimensional, got shape {tuple(selection.shape)}")
        return selection.long()

    def _uniform(self, rows: int, num: int, generator: torch.Generator | None) -> torch.Tensor:
        """(rows, num) float64 uniform in [0, 1), drawn on the generator's device, on the storage device."""
        device = generator.device if generator is not None else self.storage.device
        uniform = torch.rand(rows, num, dtype=torch.float64, device=device, generator=generator)
        return uniform.to(self.storage.device)

    def counts(self) -> torch.Tensor:
        """(C,) int64 number of filled entries per class (a copy)."""
        return self.fill_counts.clone()

    @torch.no_grad()
    def entries(self, class_index: int) -> torch.Tensor:
        """The stored features of one class, oldest first, as (fill, D) float32 (synchronises: for tests, logs)."""
        capacity = int(self.capacities[class_index])
        fill, pointer = int(self.fill_counts[class_index]), int(self.write_pointers[class_index])
        slots = (torch.arange(pointer - fill, pointer, device=self.storage.device)) % capacity
        return self.storage[int(self.offsets[class_index]) + slots].float()

    # -- checkpoints --------------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Refuse, in one line, a saved state whose capacities, dim or storage dtype differ from ours."""
        self._check_saved_layout(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _check_saved_layout(self, state_dict, prefix: str) -> None:
        saved_capacities, saved_storage = state_dict.get(prefix + "capacities"), state_dict.get(prefix + "storage")
        if saved_capacities is None or saved_storage is None:
            return  # the default loader reports missing keys
        ours = self.capacities.tolist()
        differences = []
        if saved_capacities.tolist() != ours:
            differences.append(f"capacities {saved_capacities.tolist()} (saved) vs {ours} (now)")
        saved_dim = saved_storage.shape[1] if saved_storage.dim() == 2 else tuple(saved_storage.shape[1:])
        if saved_dim != self.dim:
            differences.append(f"dim {saved_dim} (saved) vs {self.dim} (now)")
        if saved_storage.dtype != self.storage.dtype:
            differences.append(f"dtype {saved_storage.dtype} (saved) vs {self.storage.dtype} (now)")
        if differences:
            raise SemisegError(f"the class queues in the checkpoint ({prefix or 'top level'}) differ from this "
                               f"run's: {'; '.join(differences)}; resume with the same queue settings")


def _check_arguments(num_classes: int, dim: int, capacities: Sequence[int], dtype: torch.dtype) -> None:
    if num_classes < 1 or dim < 1:
        raise ValueError(f"num_classes and dim must be >= 1, got {num_classes} and {dim}")
    if len(capacities) != num_classes:
        raise ValueError(f"one capacity per class is needed: {len(capacities)} capacities for {num_classes} classes")
    if any(int(c) < 1 for c in capacities):
        raise ValueError(f"every capacity must be >= 1, got {list(capacities)}")
    if not dtype.is_floating_point:
        raise ValueError(f"the storage dtype must be floating point, got {dtype}")
