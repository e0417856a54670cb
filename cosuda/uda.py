"""One training step of every variant the paper runs (the method file).

Each section below implements one component of the paper and names its equations. Which
sections run is decided by the variant (a `cosuda.config.Variant`, a row of `VARIANTS`), never
by copies of this code:

    source segmentation      eq. 1            every variant but the oracle
    target segmentation      eq. 2-4          pseudo-labels (SSL) or target labels (oracle)
    cosine similarity loss   eq. 6-10, 19-20  process A -> dictionary, process B, L_cos
    adversarial baseline     eq. 14-15        supplementary C
    total                    eq. 11 / eq. 12 (+ lambda_adv * L_adv for the adversarial rows)
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from . import distributed as dist
from .adversarial import adversarial_loss, discriminator_loss
from .config import VARIANTS, Variant
from .labels import IGNORE_INDEX
from .method import FeatureDictionary, cosine_loss_layers, layer_thresholds, process_a_masked, process_b

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def segmentation_loss(P: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Eq. 1 / eq. 2: pixel-wise cross-entropy of the upsampled prediction P (B, C, H, W) against
    y (B, H, W), averaged over the labelled pixels (255 = ignore). 0, not NaN, when no pixel is
    labelled (a target image whose pseudo-labels all fell below the thresholds), computed
    without a host synchronisation so that a captured step stays one graph."""
    total = F.cross_entropy(P.float(), y, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (y != IGNORE_INDEX).sum().clamp(min=1)


class UDAStep:
    """Holds what persists between steps (the dictionaries) and runs one optimisation step.

    `model` returns `(features_list, logits)` (see docs/design.md); `variant` is a
    `config.Variant` (or its name in `config.VARIANTS`). Batches are dicts with `image`
    (B, 3, H, W) and `label` (B, H, W).

    `compile="step"` captures `losses` (both forward passes, processes A/B, the enqueue, every
    loss term, and through autograd their backward) with torch.compile: on a GPU as CUDA graphs
    (mode "reduce-overhead"). That needs static shapes and no host synchronisation anywhere in
    it, which is why the step uses `process_a_masked` and `enqueue(..., keep=)` and reads its
    loss values only once, after the optimiser step. `compile="off"` runs the very same code
    eagerly (for debugging and teaching). `compile_options` go to torch.compile as they are.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, variant: Variant | str, *,
                 num_classes: int, t_cos: float, lambda_cos: float, dict_size: int,
                 feature_dims: list[int], reduction: str = "mean", cos_impl: str = "auto",
                 dict_dtype: str = "float32", discriminator: nn.Module | None = None,
                 d_optimizer: torch.optim.Optimizer | None = None, lambda_adv: float = 0.0,
                 autocast: Callable[[], Any] = nullcontext, scaler=None, device: str | torch.device = "cpu",
                 compile: str = "off", compile_options: dict[str, Any] | None = None):
        if isinstance(variant, str):
            if variant not in VARIANTS:
                raise ValueError(f"UDAStep: unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
            variant = VARIANTS[variant]
        if not isinstance(variant, Variant):
            raise TypeError(f"UDAStep: variant must be a config.Variant or a name in VARIANTS, got {variant!r}")
        self.model, self.optimizer, self.variant = model, optimizer, variant
        self.num_classes, self.t_cos, self.lambda_cos = num_classes, t_cos, lambda_cos
        self.reduction, self.cos_impl = reduction, cos_impl
        self.discriminator, self.d_optimizer, self.lambda_adv = discriminator, d_optimizer, lambda_adv
        self.autocast, self.scaler = autocast, scaler
        # One dictionary per feature layer: one for DeepLabV2, three for FCN-8s (suppl. D).
        self.dictionaries = [
            FeatureDictionary(num_classes, dict_size, dim, device=device, dtype=_DTYPES[dict_dtype])
            for dim in feature_dims
        ] if variant.uses_dictionary else []
        # Supplementary D: T, T+0.1, T+0.2 for fc7, pool4, pool3; just T for one layer.
        self.thresholds = layer_thresholds(t_cos, len(feature_dims)) if len(feature_dims) > 1 else [t_cos]
        # Time spent in processes A/B, the dictionary and the cosine loss (forward, eager), for reports.
        self.method_seconds = 0.0
        if compile not in ("off", "step"):
            raise ValueError(f"UDAStep: compile must be 'off' or 'step', got {compile!r}")
        self.compile = compile
        self._losses = self.losses
        if compile == "step":
            options = {"mode": "reduce-overhead" if torch.device(device).type == "cuda" else None,
                       # DDP's own forward cannot be traced: under DDP the graph breaks around it
                       "fullgraph": not dist.is_distributed(),
                       "dynamic": False}  # crops are fixed: never recompile for symbolic sizes
            options.update(compile_options or {})
            self._losses = torch.compile(self.losses, **options)
            self._mark_static()

    # --- the step ---------------------------------------------------------------------------
    def __call__(self, source: dict | None, target: dict | None) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)  # the generator step must not train D
        total, terms, Ps, Pt = self._losses(source, target)
        self._backward_and_step(total, self.optimizer)
        terms["total"] = total

        # --- Discriminator, eq. 15 (on detached predictions) --------------------------------
        if self.variant.adversarial:
            self.discriminator.requires_grad_(True)
            self.d_optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                d_loss = discriminator_loss(self.discriminator(Ps.detach().float()),
                                            self.discriminator(Pt.detach().float()))
            self._backward_and_step(d_loss, self.d_optimizer, sync=self.discriminator)
            terms["disc"] = d_loss
        if self.scaler is not None:
            self.scaler.update()  # once per iteration, after every optimiser stepped
        # the step's one host synchronisation: every logged value at once
        values = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()
        return dict(zip(terms, values))

    def losses(self, source: dict | None, target: dict | None):
        """Both forward passes and every loss term: what `compile="step"` captures.

        Returns the total loss (0-dim), the terms {name: 0-dim tensor} and the upsampled
        predictions (Ps, Pt) (B, C, H, W) (None where not computed) for the discriminator.
        """
        variant, model = self.variant, self.model
        terms: dict[str, torch.Tensor] = {}
        Ps = Pt = None
        with self.autocast():
            total = 0.0
            if variant.needs_source:
                xs, ys = source["image"], source["label"]
                fs, ls = model(xs)
                Ps = model.upsample(ls, ys.shape[-2:])  # eq. 5
            if variant.needs_target:
                xt, yt = target["image"], target.get("label")
                ft, lt = model(xt)
                Pt = model.upsample(lt, xt.shape[-2:])

            # --- Source segmentation, eq. 1 -------------------------------------------------
            if variant.source_seg:
                terms["seg_s"] = segmentation_loss(Ps, ys)
                total = total + terms["seg_s"]

            # --- Target segmentation on pseudo-labels (eq. 2-4) or target labels (oracle) ----
            if variant.target_labels:
                terms["seg_t"] = segmentation_loss(Pt, yt)
                total = total + terms["seg_t"]

            # --- Cosine similarity loss, eq. 6-10 (19-20 for FCN-8s's three layers) ---------
            if variant.uses_cos:
                pseudo = yt if variant.split == "pseudo" else None  # eq. 7 vs eq. 8
                terms["cos"] = self.cosine_term(fs, ls, ys, ft, lt, pseudo)
                total = total + self.lambda_cos * terms["cos"]  # eq. 11 / eq. 12

            # --- Output-space adversarial loss, eq. 14 (supplementary C) --------------------
            if variant.adversarial:
                terms["adv"] = adversarial_loss(self.discriminator(Pt.float()))  # D applies the softmax
                total = total + self.lambda_adv * terms["adv"]
        return total, terms, Ps, Pt

    def _backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                           sync: nn.Module | None = None) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()  # fp16: scaled
        if sync is not None:
            dist.average_gradients(sync)
        if self.scaler is not None:
            self.scaler.step(optimizer)  # skipped when the scaled gradients overflowed
        else:
            optimizer.step()

    def _mark_static(self) -> None:
        """The dictionaries are written in place by the captured step (and refilled in place by
        load_state_dict): give CUDA graphs their fixed addresses (no copies in and out of the
        graph at every replay)."""
        for d in self.dictionaries:
            for t in (d._storage, d._inv_norms, d._ptr, d._total):
                torch._dynamo.mark_static_address(t)

    # --- processes A and B, the dictionary, L_cos -----------------------------------------
    def cosine_term(self, fs_list, ls, ys, ft_list, lt, pseudo) -> torch.Tensor:
        """Mean over feature layers of L_cos (eq. 10; eq. 20 for several layers)."""
        if torch.compiler.is_compiling():  # a profiler range or a timer would break the captured graph
            return self._cosine_term(fs_list, ls, ys, ft_list, lt, pseudo)
        start = time.perf_counter()
        with torch.profiler.record_function("cosuda.method"):  # visible in profiles / benchmarks
            loss = self._cosine_term(fs_list, ls, ys, ft_list, lt, pseudo)
        self.method_seconds += time.perf_counter() - start
        return loss

    def _cosine_term(self, fs_list, ls, ys, ft_list, lt, pseudo) -> torch.Tensor:
        mode, C = self.variant.cos, self.num_classes
        gather = dist.all_gather_rows  # every rank's rows, in rank order (static shapes)
        feats, classes, banks = [], [], []  # per feature layer: T, its classes, D (eq. 20)
        for layer, (fs, ft) in enumerate(zip(fs_list, ft_list)):
            if mode == "unsplit":
                # Ablation "w/o class-wise split": all current source vectors against all
                # target vectors as one class (no processes A/B, no dictionary).
                src = fs.detach().permute(0, 2, 3, 1).reshape(-1, fs.shape[1])
                tgt = ft.permute(0, 2, 3, 1).reshape(-1, ft.shape[1])
                feats.append(tgt)
                classes.append(torch.zeros(tgt.shape[0], dtype=torch.long, device=tgt.device))
                banks.append([gather(src)])
                continue
            with torch.no_grad():  # process A, eq. 6: every source row and whether it is correct
                s_feats, s_classes, correct = process_a_masked(fs.detach(), ls.detach(), ys)
            # Every rank enqueues every rank's vectors: one dictionary shared by the run.
            s_feats, s_classes, correct = gather(s_feats), gather(s_classes), gather(correct)
            t_feats, t_classes = process_b(ft, lt.detach(), pseudo)  # process B, eq. 7 / 8
            if mode == "dict":
                bank = self.dictionaries[layer]
                bank.enqueue(s_feats, s_classes, keep=correct)  # newest in, oldest out
            elif not torch.compiler.is_compiling():  # ablation "w/o dictionary": this iteration's vectors
                bank = [s_feats[correct & (s_classes == c)] for c in range(C)]
            else:  # the same, with static shapes: a dictionary as large as the batch (C x rows x k,
                # more memory than the list, which is padded only to the largest class)
                bank = FeatureDictionary(C, s_feats.shape[0], s_feats.shape[1], device=s_feats.device,
                                         dtype=s_feats.dtype)
                bank.enqueue(s_feats, s_classes, keep=correct)
            feats.append(t_feats)
            classes.append(t_classes)
            banks.append(bank)
        # eq. 10 per layer, averaged over the layers (eq. 20; one layer: just eq. 10)
        return cosine_loss_layers(feats, classes, banks, self.thresholds[:len(feats)],
                                  1 if mode == "unsplit" else C, reduction=self.reduction,
                                  impl=self.cos_impl).float()

    # --- state for checkpoints --------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"dictionaries": [d.state_dict() for d in self.dictionaries]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("dictionaries", [])
        if len(saved) != len(self.dictionaries):
            raise ValueError(f"checkpoint holds {len(saved)} feature dictionaries, this run needs "
                             f"{len(self.dictionaries)}: was it written by another variant or network?")
        for d, s in zip(self.dictionaries, saved):
            d.load_state_dict(s)
