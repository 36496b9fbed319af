"""U2PL: using unreliable pseudo-labels (Wang et al., CVPR 2022; IJCV 2024 as U2PL+) (docs/methods/u2pl.md).

A mean teacher whose unlabeled pixels all count. With the entropy H of the teacher's prediction and
the drop percentage α_t = 20·(1 − t/T):

    L   = L_s + λ_u·L_u + λ_c·L_c
    L_s = CE(student(x_l), y_l)                                  (+ 0.4·OHEM on the auxiliary head, Cityscapes)
    L_u = Σ_i 1[H_i < P_{100−α_t}(H)]·CE(student(x_u), ŷ)_i / Σ_i v_i      the reliable pixels, pseudo-labelled
    L_c = (1/|valid classes|)·Σ_c InfoNCE(anchors of c, prototype of c, negatives of c from queue Q_c)

Anchors of class c are student embeddings of confident pixels of c (labeled, or reliable unlabeled
with ŷ = c); the prototype is the teacher's mean embedding of those pixels; the negatives are teacher
embeddings of pixels that are confidently *not* c: labeled pixels of another class where c is among
the teacher's top r_l, and unreliable unlabeled pixels where c ranks in [r_l, r_h). They wait in one
FIFO queue per class, identical on every rank and saved in checkpoints.

The step: a supervised-only warm-up (one epoch-equivalent on Pascal), then at the first
semi-supervised step the teacher becomes a copy of the student and follows it by EMA
(λ = min(1 − 1/(k+1), 0.99)). Pseudo-labels come from the eval-mode teacher; with p = 0.5 per batch
the unlabeled batch is CutMixed with the half-area box (the only strong view); the entropy and the
contrastive sets come from the train-mode teacher on the (mixed) batch. The teacher predicts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ClassVar, Dict

import torch
import torch.nn.functional as F

from ..collectives import all_gather_rows
from ..components.class_queues import ClassQueues
from ..components.contrastive_sets import (
    class_prototypes,
    contrastive_sets,
    downsample_labels,
    flatten_features,
    negative_features_for_queue,
    sample_anchor_indices,
)
from ..components.cutmix import HalfAreaBox, mix
from ..components.ema import EMATeacher
from ..components.entropy_partition import drop_percent, pixel_entropy, reliable_partition
from ..components.infonce import class_contrastive_loss
from ..components.selection import pseudo_labels, reliable_ratio, select_pseudo_labels
from ..config_checks import int_at_least, real_above, real_at_least, real_between
from ..errors import SemisegError
from ..labels import IGNORE_INDEX
from ..registry import METHODS
from .base import Method, SelectionParams
from .interface import Views
from ..components.norm_statistics import keep_norm_statistics
from .panels import Panel, image_panel, labels_panel

UNSUP_NORMS = ("paper", "released")
POSITIVE_FROM = ("candidates", "anchors")
QUEUE_DTYPES = ("float32", "float16")
COIN_SALT = 0x5A2917  # the per-batch CutMix coin is a function of the step (same on every rank)
PARTITION_COLOURS = ((170, 170, 170), (44, 160, 44), (214, 39, 40))  # neither, reliable, unreliable


@dataclass
class U2PLParams(SelectionParams):
    unsup_weight: float = 1.0  # λ_u
    contrastive_weight: float = 0.1  # λ_c (released: 1 with a 1/W all-reduce, i.e. 1/W effective)
    ema_decay: float = 0.99  # α of λ_k = min(1 − 1/(k+1), α), k counted from the first semi-supervised step
    warmup_epochs: float = 1.0  # supervised-only epoch-equivalents before the teacher starts (Pascal 1, Cityscapes 0)
    drop_percent: float = 20.0  # α_0 of α_t = α_0·(1 − t/T) (100 − released drop_percent 80)
    cutmix_prob: float = 0.5  # probability that a step's unlabeled batch is CutMixed (half-area box)
    delta_p: float = 0.3  # δ_p: anchors need teacher probability of their class above this
    delta_n: float = 1.0  # δ_n: negatives need teacher probability of the class below this (1: no filter)
    low_rank: int = 3  # r_l
    high_rank: int = 20  # r_h
    num_anchors: int = 256  # M anchors sampled per class
    num_negatives: int = 50  # N negatives sampled per anchor
    temperature: float = 0.5  # τ_c of the contrastive loss
    queue_size: int = 30000  # per-class queue capacity
    queue_size_background: int = 50000  # class 0's capacity
    queue_dtype: str = "float32"  # float32 | float16 (halves the queues' memory)
    positive_from: str = "candidates"  # prototype over: candidates (paper) | anchors
    aux_weight: float = 0.4  # weight of the auxiliary head's loss (when model.heads.auxiliary is on)
    selection: str = "entropy"  # L_u's pixels: entropy (kept below γ, the paper) | csl (CSL's soft weights)
    unsup_norm: str = "paper"  # paper: Σ kept CE / Σ valid | released: N_all·Σ kept CE / N_kept² (comparison runs)
    compat_onehot_bug: bool = False  # the released one-hot scatter into batch slot 0 (comparison runs only)
    compat_alias_first_epoch: bool = False  # the released teacher = student for the first semi epoch (comparison)

    choices: ClassVar[Dict[str, tuple]] = {"unsup_norm": UNSUP_NORMS, "positive_from": POSITIVE_FROM,
                                           "queue_dtype": QUEUE_DTYPES, "selection": ("entropy", "csl")}
    ranges: ClassVar[Dict[str, tuple]] = {
        "unsup_weight": real_at_least(0), "contrastive_weight": real_at_least(0), "aux_weight": real_at_least(0),
        "ema_decay": real_between(0, 1, True), "warmup_epochs": real_at_least(0), "drop_percent": real_between(0, 100),
        "cutmix_prob": real_between(0, 1), "delta_p": real_between(0, 1), "delta_n": real_between(0, 1),
        "low_rank": int_at_least(1), "high_rank": int_at_least(1), "num_anchors": int_at_least(1),
        "num_negatives": int_at_least(1), "temperature": real_above(0),
        "queue_size": int_at_least(1), "queue_size_background": int_at_least(1)}


@METHODS.register("u2pl")
class U2PL(Method):
    Params = U2PLParams
    required_heads = ("representation",)
    variants = {"released": {"unsup_norm": "released", "compat_onehot_bug": True,
                             "compat_alias_first_epoch": True}, "csl_selection": {"selection": "csl"}}

    def __init__(self, model, params: U2PLParams):
        super().__init__(model, params)
        if params.low_rank >= params.high_rank:
            raise SemisegError(f"method.low_rank ({params.low_rank}) must be below method.high_rank "
                               f"({params.high_rank})")
        # the teacher's BN statistics are its own, moved by its train-mode forwards (as released)
        self.teacher = EMATeacher(model, params.ema_decay, warmup=True, include_buffers=False,
                                  batch_statistics=True)
        self.num_classes = model.num_classes
        dim = model.heads["representation"][-1].out_channels
        capacities = [params.queue_size_background] + [params.queue_size] * (self.num_classes - 1)
        self.queues = ClassQueues(self.num_classes, dim, capacities, dtype=getattr(torch, params.queue_dtype))
        self.register_buffer("semi_started", torch.zeros((), dtype=torch.bool))

    def views(self) -> Views:
        return Views(unlabeled=True, weak_pipeline="u2pl", box=HalfAreaBox())

    # -- the phases -------------------------------------------------------------------------------
    def warmup_steps(self, ctx) -> int:
        return int(round(self.params.warmup_epochs * ctx.iters_per_epoch))

    def _start_teacher(self, ctx) -> None:
        """At the first semi-supervised step the teacher becomes a copy of the student (parameters and buffers)."""
        if not bool(self.semi_started):
            self.teacher.copy_from(self.model)
            self.teacher.updates.zero_()
            self.semi_started.fill_(True)
        if self.params.compat_alias_first_epoch and ctx.step < self.warmup_steps(ctx) + ctx.iters_per_epoch:
            with torch.no_grad():  # released: the teacher's parameters *are* the student's this epoch
                for p_t, p_s in zip(self.teacher.net.parameters(), self.model.parameters()):
                    p_t.copy_(p_s)

    @contextlib.contextmanager
    def _teacher_mode(self, training: bool):
        was = self.teacher.net.training
        self.teacher.net.train(training)
        try:
            yield self.teacher.net
        finally:
            self.teacher.net.train(was)

    def _cutmix_coin(self, ctx) -> bool:
        generator = torch.Generator().manual_seed(COIN_SALT + ctx.step)
        return bool(torch.rand((), generator=generator) < self.params.cutmix_prob)

    def _mixed_targets(self, unlabeled: dict, logits_u: torch.Tensor, ctx) -> tuple:
        """(x_u, ŷ, valid, w) of the step: ŷ = argmax of the eval-mode teacher's `logits_u` (ignore on padding),
        w its CSL weights (`selection: csl`; None otherwise), all CutMixed with the half-area box when the
        step's coin says so."""
        x_u, valid_u = unlabeled["image_w"], unlabeled["valid"].bool()
        weight = None
        if self.params.selection == "csl":
            pseudo, weight = select_pseudo_labels(logits_u, valid_u, self.params)
        else:
            pseudo, _ = pseudo_labels(logits_u)
        pseudo = torch.where(valid_u, pseudo, torch.full_like(pseudo, IGNORE_INDEX))
        if self._cutmix_coin(ctx):
            box = unlabeled["box"][:, 0]
            x_u, pseudo, valid_u = (mix(t, box) for t in (x_u, pseudo, valid_u))
            weight = None if weight is None else mix(weight, box)
        return x_u, pseudo, valid_u, weight

    # -- the step -----------------------------------------------------------------------------------
    def supervised_terms(self, out_l: dict, y_l: torch.Tensor) -> tuple[torch.Tensor, dict]:
        loss_s = self.supervised_loss(out_l["logits"], y_l)
        logs = {}
        if "auxiliary" in out_l:
            loss_aux = self.supervised_loss(out_l["auxiliary"], y_l)
            logs["loss_aux"] = loss_aux.detach()
            loss_s = loss_s + self.params.aux_weight * loss_aux
        return loss_s, logs

    def outputs(self, *extra) -> tuple:
        names = ("logits", *extra)
        return names + (("auxiliary",) if "auxiliary" in self.model.heads else ())

    def training_step(self, batch, ctx):
        labeled, unlabeled = batch["labeled"], batch["unlabeled"]
        x_l, y_l = labeled["image"], labeled["mask"]
        if ctx.step < self.warmup_steps(ctx):  # supervised only; the teacher waits
            loss_s, logs = self.supervised_terms(self.model(x_l, outputs=self.outputs()), y_l)
            return loss_s, {"loss_s": loss_s.detach(), **logs}
        self._start_teacher(ctx)
        p = self.params
        x_u, valid_u = unlabeled["image_w"], unlabeled["valid"].bool()

        with torch.no_grad(), self._teacher_mode(False) as teacher:  # pseudo-labels: eval-mode teacher
            logits_u = teacher(x_u)
        x_u, pseudo, valid_u, csl_weight = self._mixed_targets(unlabeled, logits_u, ctx)

        n_l = len(x_l)
        out = self.model(torch.cat([x_l, x_u]), outputs=self.outputs("representation"))
        with torch.no_grad(), self._teacher_mode(True) as teacher:  # train-mode teacher on the mixed batch
            out_t = teacher(torch.cat([x_l, x_u]), outputs=("logits", "representation"))

        loss_s, logs = self.supervised_terms({k: v[:n_l] for k, v in out.items()}, y_l)
        alpha = drop_percent(ctx.step, ctx.total, p.drop_percent)
        probs_t = out_t["logits"].float().softmax(dim=1)
        entropy = pixel_entropy(probs_t[n_l:])
        # percentiles over the valid pixels of the global batch: the same partition on 1 or N processes
        partition = reliable_partition(entropy, valid_u, alpha, population=all_gather_rows(entropy[valid_u]))
        weight = partition.keep.float() if csl_weight is None else csl_weight
        loss_u = self.unsupervised_loss(out["logits"][n_l:], pseudo, weight, valid_u)
        loss_c = self.contrastive_loss(out["representation"], out_t, y_l, pseudo, partition, valid_u, n_l)
        loss = loss_s + p.unsup_weight * loss_u + p.contrastive_weight * loss_c
        return loss, {"loss_s": loss_s.detach(), "loss_u": loss_u.detach(), "loss_c": loss_c.detach(),
                      "alpha": torch.tensor(alpha), "kept_ratio": reliable_ratio(weight, valid_u), **logs}

    def unsupervised_loss(self, logits_u, pseudo, weight, valid_u) -> torch.Tensor:
        """Σ w·CE / Σ valid (paper; w = the 0/1 keep mask, or CSL's weights), or N_all·Σ w·CE / (Σ w)²
        (`unsup_norm: released`). ŷ is 255 on padding, where the CE is 0."""
        ce = F.cross_entropy(logits_u.float(), pseudo, ignore_index=IGNORE_INDEX, reduction="none")
        total = (ce * weight).sum()
        n_valid = valid_u.float().sum().clamp(min=1)
        if self.params.unsup_norm == "released":
            n_kept = weight.sum().clamp(min=1)
            return n_valid * total / n_kept**2
        return total / n_valid

    def contrastive_loss(self, rep, out_t, y_l, pseudo, partition, valid_u, n_l) -> torch.Tensor:
        """L_c at the representation resolution (docs/methods/u2pl.md: contrastive loss)."""
        p = self.params
        size = rep.shape[-2:]
        rep_t = out_t["representation"]
        logits_small = F.interpolate(out_t["logits"].float(), size=size, mode="bilinear", align_corners=True)
        probs_small = logits_small.softmax(dim=1)
        labels = downsample_labels(y_l, size)
        pseudo_small = downsample_labels(pseudo, size)
        reliable = downsample_labels(partition.reliable.long(), size).bool()
        unreliable = downsample_labels(partition.unreliable.long(), size).bool()
        valid_small = downsample_labels(valid_u.long(), size).bool()
        sets = contrastive_sets(labels, pseudo_small, probs_small[:n_l], probs_small[n_l:], reliable, unreliable,
                                delta_p=p.delta_p, delta_n=p.delta_n, low_rank=p.low_rank, high_rank=p.high_rank,
                                valid_u=valid_small, compat_onehot_bug=p.compat_onehot_bug)
        student, teacher = flatten_features(rep), flatten_features(rep_t.float())  # labeled pixels first
        pool = sets.candidates if p.positive_from == "candidates" else sets.anchors
        prototypes = class_prototypes(teacher, pool)
        # before sampling (as released); labeled then unlabeled negatives, each gathered in rank order, so the
        # queues hold the rows in the order one process with the whole global batch would push them
        n = sets.num_labeled
        self.queues.push(*negative_features_for_queue(teacher[:n], sets.negatives[:, :n]))
        self.queues.push(*negative_features_for_queue(teacher[n:], sets.negatives[:, n:]))

        index, has_anchors = sample_anchor_indices(sets.anchors, p.num_anchors)
        # Only the K classes whose term exists (valid, with anchors and a non-empty queue) draw negatives: one
        # host synchronisation per step, while drawing for all C classes would move C·M·N·D floats (21 x 256 x
        # 50 x 256 x 4 bytes = 275 MB at Pascal's defaults) to multiply most of them by zero.
        sampled = torch.nonzero(sets.valid_classes & has_anchors & (self.queues.fill_counts > 0)).squeeze(1)
        negatives, _ = self.queues.sample(sampled, p.num_anchors * p.num_negatives)
        negatives = negatives.view(len(sampled), p.num_anchors, p.num_negatives, student.shape[-1])
        every = torch.ones(len(sampled), dtype=torch.bool, device=student.device)
        return class_contrastive_loss(student[index[sampled]], prototypes[sampled], negatives, every, every,
                                      p.temperature, num_valid=sets.valid_classes.sum())

    def after_step(self):
        if bool(self.semi_started):
            self.teacher.update(self.model)

    @torch.no_grad()
    def predict(self, images):
        with self._teacher_mode(False) as teacher:
            return teacher(images)

    # -- pictures -----------------------------------------------------------------------------------
    def _teacher_at(self, ctx):
        """The teacher's forward as `training_step` at `ctx` sees it, without `_start_teacher`'s writes: before the
        first semi-supervised step the teacher would become a copy of the student (parameters and buffers), and
        in the released first semi epoch (`compat_alias_first_epoch`) it takes the student's parameters."""
        net = self.teacher.net
        if not bool(self.semi_started):
            swap = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        elif self.params.compat_alias_first_epoch and ctx.step < self.warmup_steps(ctx) + ctx.iters_per_epoch:
            swap = dict(self.model.named_parameters())
        else:
            return net
        return lambda *args, **kwargs: torch.func.functional_call(net, swap, args, kwargs)

    @torch.no_grad()
    def unlabeled_maps(self, batch: dict, ctx) -> dict:
        """The step's unlabeled maps at `ctx`, computed without changing any state: `image` (x_u, CutMixed when
        `mixed`), `pseudo` (ŷ, 255 on padding), `valid`, `entropy` (H of the train-mode teacher on the labeled and
        mixed unlabeled batch), `alpha` (α_t) and `partition` (`reliable_partition`; percentiles over this
        process's valid pixels, which on one process are the step's)."""
        x_l, unlabeled = batch["labeled"]["image"], batch["unlabeled"]
        teacher = self._teacher_at(ctx)
        with keep_norm_statistics(self):  # the train-mode forward moves the BN statistics it uses
            with self._teacher_mode(False):
                logits_u = teacher(unlabeled["image_w"])
            x_u, pseudo, valid_u, _ = self._mixed_targets(unlabeled, logits_u, ctx)
            with self._teacher_mode(True):
                logits_t = teacher(torch.cat([x_l, x_u]))
        alpha = drop_percent(ctx.step, ctx.total, self.params.drop_percent)
        entropy = pixel_entropy(logits_t[len(x_l):].float().softmax(dim=1))
        return {"image": x_u, "pseudo": pseudo, "valid": valid_u, "entropy": entropy, "alpha": alpha,
                "partition": reliable_partition(entropy, valid_u, alpha), "mixed": self._cutmix_coin(ctx)}

    @torch.no_grad()
    def explain(self, batch, ctx):
        """For the first unlabeled sample, what the step at `ctx` sees: the (CutMixed) image, its pseudo-labels, the
        teacher's entropy with γ = P_{100−α_t}, the reliable / unreliable / neither partition, and the number of
        keys in each class queue. Nothing is written (no teacher copy, no EMA update, no queue push)."""
        maps = self.unlabeled_maps(batch, ctx)
        part = maps["partition"]
        warmup = self.warmup_steps(ctx)
        note = f" (warm-up: unused before step {warmup})" if ctx.step < warmup else ""
        mixed = "CutMixed with the half-area box" if maps["mixed"] else "no CutMix at this step"
        # 0 neither, 1 reliable (H ≤ P_α), 2 unreliable (H ≥ γ; wins a tie at α = 50), 255 padding
        category = torch.where(part.reliable[0], 1, 0)
        category = torch.where(part.unreliable[0], 2, category)
        category = torch.where(maps["valid"][0], category, IGNORE_INDEX)
        gamma, low, alpha = float(part.high_threshold), float(part.low_threshold), maps["alpha"]
        counts = self.queues.counts().cpu().numpy()
        return [
            image_panel(maps["image"][0], f"unlabeled image, {mixed}{note}"),
            labels_panel(maps["pseudo"][0], "pseudo-labels (eval-mode teacher)"),
            Panel(f"teacher entropy H; γ = P_(100−α_t) = {gamma:.3f}, α_t = {alpha:.1f} %", "scalar_map",
                  maps["entropy"][0].cpu().numpy(), {"threshold": gamma, "label": "entropy (nats)"}),
            Panel(f"reliable (H ≤ {low:.3f}) / unreliable (H ≥ γ)", "mask", category.cpu().numpy(),
                  {"names": ["neither", "reliable", "unreliable"], "colours": PARTITION_COLOURS}),
            Panel(f"keys per class queue ({int(counts.sum())} in all)", "bars", counts,
                  {"labels": list(range(len(counts))), "class_indices": True, "ylabel": "keys"}),
        ]
