"""The fast implementations of the cosine loss (eq. 9-10) behind `cosuda.method.cosine_loss`.

`cosuda.method.cosine_loss_reference` is the loss to read next to the paper; this module computes
the same value and gradient (tests/test_method.py checks both against it, down to float64
rounding and with torch.autograd.gradcheck) without a Python loop over classes in the backward
pass and without the per-class temporaries of plain autograd:

    impl       how                                                         where
    ---------  ----------------------------------------------------------  ------------------------
    "sorted"   rows sorted by class once, one matrix product per class,    the CPU default
               a hand-written backward (`_CosineLoss`)
    "grouped"  the same with one `torch._grouped_mm` over all classes and  CUDA (bfloat16, Hopper+)
               static shapes: no host sync                                 and captured steps

Constraints of a captured step (torch.compile fullgraph, CUDA graphs). A captured graph cannot
synchronise with the host, raise, or build a tensor whose shape depends on the data. So:
- class sizes are counted with `index_add_` (`bincount_static`), never `torch.bincount`, whose
  output length depends on the largest class id;
- "grouped" passes its class offsets to the GEMM as a device tensor; "sorted" reads them on the
  host (`.tolist()`), which is why `cosine_loss(impl="auto")` picks "grouped" while compiling;
- the dictionary is read as one padded (C, slots, k) tensor with a mask of the held slots, so
  its shapes never change as it fills up (`FeatureDictionary.padded`).
`tests/test_capture.py` compiles the method with fullgraph=True to check this without a GPU.

Order within a training step, as in Fig. 2: process A -> enqueue -> process B -> cosine_loss ->
backward. The "sorted" backward reads the dictionary, so an enqueue between the loss and its
backward pass is an error (autograd reports the in-place change).

Precision: sums and norms are accumulated in `accumulation_dtype(feats.dtype)` (float32 for
16-bit features, float64 for float64 ones: never narrower than the input); the similarity
matrix itself is in the features' dtype. This module imports only torch.
"""
from __future__ import annotations

import torch

EPS = 1e-12  # norms are clamped to EPS (as in F.normalize): a zero vector has cosine 0, never NaN

__all__ = ["EPS", "accumulation_dtype", "bincount_static", "grouped_available", "pad_bank", "fast_cosine_loss"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype norms and sums are computed in: at least float32, float64 stays float64."""
    return torch.promote_types(dtype, torch.float32)


def bincount_static(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows per class (num_classes,) int64, classes in [0, num_classes): torch.bincount with a
    shape that never depends on the data (bincount's does), so it can be captured."""
    zeros = torch.zeros(num_classes, dtype=torch.int64, device=classes.device)
    return zeros.index_add_(0, classes, torch.ones_like(classes))


def grouped_available(feats: torch.Tensor) -> bool:
    """Whether impl="grouped" can run for these target vectors (N, k) on this torch build."""
    if not hasattr(torch, "_grouped_mm") or feats.shape[1] * feats.element_size() % 16:
        return False  # rows must be 16-byte aligned
    if feats.device.type == "cpu":  # traced, its shape function accepts only 16-bit inputs
        traced = torch.compiler.is_compiling()
        return feats.dtype == torch.bfloat16 or (feats.dtype == torch.float32 and not traced)
    if feats.device.type == "cuda":  # cuBLAS grouped GEMM: bfloat16 on Hopper or newer
        return feats.dtype == torch.bfloat16 and torch.cuda.get_device_capability(feats.device)[0] >= 9
    return False


def pad_bank(banks: list[torch.Tensor], num_classes: int, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every D^c (n_c, k) in one (C, S, k) tensor of `dtype`, zero rows after the n_c real ones,
    S = the largest n_c rounded up to a multiple of 8 (16-byte aligned GEMM rows); with the
    (C, S) 1/||D^c_j|| in `accumulation_dtype(dtype)` (0 for the padding) and the (C, S) mask of
    real vectors: the layout a `FeatureDictionary` already has (`FeatureDictionary.padded`)."""
    k = banks[0].shape[1]
    size = max(8, -(-max(d.shape[0] for d in banks) // 8) * 8)
    device = next((d.device for d in banks if d.numel()), banks[0].device)
    padded = torch.zeros(num_classes, size, k, dtype=dtype, device=device)
    inv_norms = torch.zeros(num_classes, size, dtype=accumulation_dtype(dtype), device=device)
    valid = torch.zeros(num_classes, size, dtype=torch.bool, device=device)
    for c, d in enumerate(banks):
        n = d.shape[0]
        padded[c, :n] = d.detach()
        # the norms of the vectors as stored (rounded to `dtype`), which the products will use
        norms = torch.linalg.vector_norm(padded[c, :n], dim=1, dtype=inv_norms.dtype)
        inv_norms[c, :n] = 1.0 / norms.clamp_min(EPS)
        valid[c, :n] = True
    return padded, inv_norms, valid


def fast_cosine_loss(feats: torch.Tensor, classes: torch.Tensor, bank: torch.Tensor, inv_norms: torch.Tensor,
                     valid: torch.Tensor, threshold: float, num_classes: int, reduction: str,
                     grouped: bool) -> torch.Tensor:
    """Eq. 9-10 for all classes at once ("sorted", or "grouped" when `grouped`).

    feats T (N, k), N > 0, classes int64 (N,) in [0, num_classes), on one device; bank (C, S, k)
    in feats' dtype, inv_norms (C, S) and valid (C, S) bool as `pad_bank` returns them. Inputs
    are not checked here (`cosuda.method.cosine_loss` does). Returns the 0-dim loss in
    `accumulation_dtype(feats.dtype)`; no gradient reaches the bank.
    """
    return _CosineLoss.apply(feats, classes, bank, inv_norms, valid, threshold, num_classes, reduction, grouped)


def _unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (N, k), a temporary overwritten when it already has the accumulation dtype ->
    x / max(||x||, EPS) in x's dtype, 1 / max(||x||, EPS) (N,) in the accumulation dtype, and
    the rows whose norm is above EPS (N,) bool."""
    acc = accumulation_dtype(x.dtype)
    norm = torch.linalg.vector_norm(x, dim=1, dtype=acc)
    inv = 1.0 / norm.clamp_min(EPS)
    if x.dtype == acc:
        unit = x.mul_(inv[:, None])
    else:  # scale in float32 and round once (float16 cannot even hold 1 / EPS)
        unit = (x * inv[:, None]).to(x.dtype)
    return unit, inv, norm > EPS


def _class_weights(loss_c, count_c, num_classes, reduction):
    """Loss and per-class weight w_c = dL / d(sum_selected (1 - M^c)) from per-class sums (C,)."""
    if reduction == "sum":  # eq. 10: (1/C) sum_c
        weight = torch.full_like(loss_c, 1.0 / num_classes)
        return loss_c.sum() / num_classes, weight
    active = count_c > 0
    n_active = active.sum().clamp_min(1)
    weight = torch.where(active, 1.0 / (count_c.clamp_min(1) * n_active), 0.0)
    return (loss_c * weight).sum(), weight


class _CosineLoss(torch.autograd.Function):
    """Eq. 9-10 for all classes at once, with the rows of T sorted by class (T^c is then one
    contiguous block) and M an (N, S) matrix: each target row against the S slots of its class.

    Forward: M = T_unit @ D^c.T, one product per class ("sorted") or one grouped product
    ("grouped"), each column scaled by 1/||D^c_j|| (eq. 9). Then, in place, relu(M - T_cos):
    its row sums give sum_selected (1 - M) = n_selected (1 - T_cos) - sum relu(M - T_cos), its
    sign is the selection 1[M > T_cos] (eq. 10). Only that mask (divided by ||D^c_j||) is kept;
    "sorted" allocates no other (N, S) tensor ("grouped" also gathers the (N, S) column scales).
    Backward: dL/dT_unit = -w_c * mask @ D^c, then the backward of the row normalisation.
    """

    @staticmethod
    def forward(ctx, feats, classes, bank, inv_norms, valid, threshold, num_classes, reduction, grouped):
        acc = accumulation_dtype(feats.dtype)
        order = torch.argsort(classes)
        sorted_classes = classes.index_select(0, order)
        rows_per_class = bincount_static(classes, num_classes)
        unit, inv_norm, not_tiny = _unit_rows(feats.detach().index_select(0, order))
        if grouped:  # static shapes, no host sync
            offsets = torch.cumsum(rows_per_class, 0).to(torch.int32)
            m = torch._grouped_mm(unit, bank.transpose(1, 2), offs=offsets)  # (N, S)
            column_scale = inv_norms.index_select(0, sorted_classes).to(m.dtype)  # 1/||D_j|| per row's class
            m.mul_(column_scale)                                 # M, eq. 9
        else:
            offsets = rows_per_class.tolist()                    # the one host sync
            m = unit.new_empty(unit.shape[0], bank.shape[1])
            for c, rows in _class_blocks(offsets):
                torch.mm(unit[rows], bank[c].T, out=m[rows])     # unit targets . raw D^c
                m[rows].mul_(inv_norms[c].to(m.dtype))           # M^c, eq. 9
        # T_cos as a 0-dim tensor of m's dtype: the comparison below and the sums after it use
        # the same rounded value on every device, and filling it needs no host-to-device copy
        t_used = m.new_full((), threshold)
        m.sub_(t_used).clamp_(min=0.0)                           # relu(M - T_cos): > 0 exactly where selected
        if threshold < 0:                                        # an empty slot (cosine 0) would pass
            m.mul_(valid.index_select(0, sorted_classes).to(m.dtype))
        excess = m.sum(dim=1, dtype=acc)
        m.sign_()                                                # 1[M > T_cos], eq. 10
        count = m.sum(dim=1, dtype=acc)
        if grouped:                                              # mask / ||D_j||, for the backward
            m = _aligned(m.mul_(column_scale))
        else:
            for c, rows in _class_blocks(offsets):
                m[rows].mul_(inv_norms[c].to(m.dtype))
        # n (1 - T) - sum relu(M - T) with the T that was subtracted: exact where M = T exactly
        # (a target vector parallel to a bank vector, T close to 1)
        zeros = torch.zeros(num_classes, dtype=torch.float64, device=feats.device)
        count_c = zeros.index_add(0, sorted_classes, count.double())
        excess_c = zeros.index_add(0, sorted_classes, excess.double())
        loss_c = count_c * (1.0 - t_used.double()) - excess_c            # sum_selected (1 - M) per class
        loss, weight = _class_weights(loss_c, count_c, num_classes, reduction)
        # sum_selected M per row: the backward needs u_i . g_i, which is exactly this (see there)
        selected_sum = (count * t_used.to(acc) + excess) * not_tiny
        ctx.grouped, ctx.offsets = grouped, offsets
        ctx.save_for_backward(unit, inv_norm, selected_sum, order, sorted_classes, m, bank, weight.to(acc))
        return loss.to(acc)

    @staticmethod
    def backward(ctx, grad_loss):
        unit, inv_norm, selected_sum, order, sorted_classes, mask, bank, weight = ctx.saved_tensors
        if ctx.grouped:
            grad_unit = torch._grouped_mm(mask, bank, offs=ctx.offsets)   # sum_j 1[M_ij > T] D_j / ||D_j||
        else:
            grad_unit = torch.empty_like(unit)
            for c, rows in _class_blocks(ctx.offsets):
                torch.mm(mask[rows], bank[c], out=grad_unit[rows])
        # g_i = sum_j 1[M_ij > T] D_j / ||D_j||, so u_i . g_i = sum_j 1[M_ij > T] M_ij: the forward's
        # selected_sum. Backward of u = x / ||x||: dL/dx = (g - u (u . g)) / ||x|| (g / EPS if clamped)
        g = grad_unit.to(inv_norm.dtype)                          # in place when already that dtype
        g.addcmul_(unit, selected_sum[:, None], value=-1.0)
        per_row = (-grad_loss * weight).index_select(0, sorted_classes)    # dL/dM = -w_c when selected
        g.mul_((inv_norm * per_row)[:, None])
        grad_feats = torch.empty_like(unit).index_copy_(0, order, g.to(unit.dtype))
        return grad_feats, None, None, None, None, None, None, None, None


def _class_blocks(rows_per_class: list[int]):
    """(class, slice of its rows) for every class with rows, rows being sorted by class."""
    start = 0
    for c, n in enumerate(rows_per_class):
        if n:
            yield c, slice(start, start + n)
        start += n


def _aligned(m: torch.Tensor) -> torch.Tensor:
    """m, or a copy of it, whose rows start on 16-byte boundaries as grouped_mm requires. The
    padding after each row is zero: the CPU kernel reads it, and 0 * NaN garbage would be NaN."""
    if m.is_contiguous() and m.shape[1] * m.element_size() % 16 == 0:
        return m
    width = -(-m.shape[1] * m.element_size() // 16) * 16 // m.element_size()
    return torch.zeros(m.shape[0], width, dtype=m.dtype, device=m.device)[:, :m.shape[1]].copy_(m)
