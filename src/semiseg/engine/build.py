"""From a config to the objects a run needs: preset, data splits, method, loaders."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from .. import catalog
from ..config import resolve_method_params
from ..data.domains import dataset_preset
from ..data.sampling import LABELED_STREAM, UNLABELED_STREAM, SeededItems, StepBatchSampler, StepSampler
from ..data.transforms import StrongPhotometric, build_weak
from ..data.views import LabeledDataset, UnlabeledDataset
from ..errors import SemisegError
from ..models import build_model
from .batch_plan import BatchPlan


def build_preset(cfg, saved=None):
    """data.dataset's preset, or for a cross-domain run (data.target.dataset) the source + target pair, whose
    `build` gives source labeled, target unlabeled and target val images and whose eval defaults are the target's;
    `saved`: a checkpoint's meta, the classes of a folder dataset whose card is not at hand (data/domains.py)."""
    return dataset_preset(cfg.data, catalog.DATASETS, saved)


def build_method(cfg, num_classes: int, load_weights: bool = True):
    """The method named by `method.name`, with its network; its params validated."""
    method_cls = catalog.METHODS.get(cfg.method.name)
    params = resolve_method_params(cfg, method_cls.Params)
    for head in method_cls.required_heads:
        if not getattr(cfg.model.heads, head):
            raise SemisegError(f"method '{cfg.method.name}' reads the network's '{head}' output: "
                               f"switch it on with model.heads.{head} (see docs/config.md)")
    model_cfg = cfg.model if load_weights else OmegaConf.merge(cfg.model, {"pretrained": None})
    model = build_model(model_cfg, num_classes)
    return method_cls(model, params)


def iters_per_epoch(cfg, splits, views) -> int:
    """I = ⌊max(N_l, N_u) / B_u⌋ steps per epoch-equivalent (global batches; ≥ 1); N_u counts only when the
    method reads unlabeled images, B_u is then the unlabeled batch (docs/method_interface.md)."""
    t = cfg.train
    n_l = len(splits.labeled)
    if views.unlabeled and splits.unlabeled is not None:
        return max(1, max(n_l, len(splits.unlabeled)) // (t.unlabeled_batch_size or t.total_batch_size))
    return max(1, n_l // t.total_batch_size)


def _loader(dataset, sampler: StepSampler, start: int, stop: int, workers: int, seed: int, rank: int,
            plan: BatchPlan):
    batches = StepBatchSampler(sampler, start, stop, rank, plan.world_size, plan.accumulation_steps)
    # The loader's own generator: its base-seed draw must not consume the global torch RNG,
    # or a resumed run (a new loader at step t) would diverge from an uninterrupted one.
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(SeededItems(dataset), batch_sampler=batches, num_workers=workers,
                      persistent_workers=False, pin_memory=torch.cuda.is_available(),
                      prefetch_factor=4 if workers > 0 else None, generator=generator)


def crop_size(cfg, preset) -> int:
    return cfg.data.crop_size or preset.crop_size


def _group(micro_batches, size: int):
    """Consecutive micro-batches, `size` at a time: the passes of one optimiser step."""
    step = []
    for micro in micro_batches:
        step.append(micro)
        if len(step) == size:
            yield step
            step = []


def build_train_batches(cfg, preset, splits, method, start: int, plan: BatchPlan, rank: int = 0):
    """An iterator, one item per step start..T-1, over this rank's list of A micro-batches
    {"labeled": ..., "unlabeled": ...} (data/sampling.py: the global batch of step t is fixed)."""
    data, train, views = cfg.data, cfg.train, method.views()
    weak = build_weak(data.weak_pipeline or views.weak_pipeline, crop_size(cfg, preset), tuple(data.scale_range))
    total = train.total_iters
    labeled = _loader(LabeledDataset(splits.labeled, weak),
                      StepSampler(len(splits.labeled), train.total_batch_size, cfg.seed, LABELED_STREAM),
                      start, total, data.num_workers, cfg.seed, rank, plan)
    if not views.unlabeled:
        yield from _group(({"labeled": batch} for batch in labeled), plan.accumulation_steps)
        return
    if splits.unlabeled is None or len(splits.unlabeled) == 0:
        raise SemisegError(f"method '{cfg.method.name}' needs unlabeled images: set data.unlabeled_list, "
                           "data.split, or data.num_labeled / data.labeled_fraction")
    batch_u = train.unlabeled_batch_size or train.total_batch_size
    if plan.unlabeled_per_pass < 2 and views.box is not None:
        raise SemisegError(f"each forward pass gets {plan.unlabeled_per_pass} unlabeled image(s) "
                           f"(train.unlabeled_batch_size={batch_u} over {plan.parts} passes); CutMix needs at "
                           "least 2 (a sample's partner is another sample of the same pass)")
    strong = StrongPhotometric(blur_sigma=tuple(data.strong_blur_sigma))
    unlabeled = _loader(UnlabeledDataset(splits.unlabeled, weak, views.strong, strong, views.box, views.num_boxes,
                                         alternative=views.alternative, alternative_index=views.alternative_index),
                        StepSampler(len(splits.unlabeled), batch_u, cfg.seed, UNLABELED_STREAM),
                        start, total, data.num_workers, cfg.seed + 1, rank, plan)
    pairs = ({"labeled": batch_l, "unlabeled": batch_u} for batch_l, batch_u in zip(labeled, unlabeled))
    yield from _group(pairs, plan.accumulation_steps)
