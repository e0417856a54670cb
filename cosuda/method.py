"""The method of the paper (section 3.2, supplementary B and D): processes A and B, the source
feature dictionary and the cosine similarity loss.

    function / class        paper            what it computes
    ----------------------  ---------------  ------------------------------------------------
    process_a               eq. 6            correctly classified source vectors S^c with their class
    process_b               eq. 7 / eq. 8    target vectors T^c split by the augmented pseudo-label
                                             (eq. 7) or by the current prediction (eq. 8)
    FeatureDictionary       sec. 3.2         D^c: per class, a queue of the newest dict-size source vectors
    cosine_loss             eq. 9-10         M^c = cos(T^c, D^c); L1 between the elements M^c > T_cos and 1
    layer_thresholds        suppl. D         T_cos, T_cos + 0.1, T_cos + 0.2 for fc7, pool4, pool3
    cosine_loss_layers      eq. 19-20        mean over layers of cosine_loss (FCN-8s)

Shapes follow the paper: feature maps f (B, k, h, w), class scores p (B, C, h, w) (FCN-8s gives
them at full resolution (B, C, H, W), supplementary D), labels y (B, H, W) with 255 = ignore.
Flattened vectors are rows (N, k) in (b, y, x) order.

Pure tensor math: this module imports only torch, so it can be read, tested and reused alone.

Two readings of eq. 10 are offered (`reduction`): "sum" is eq. 10 literally,
(1/C) sum_c ||M_hat^c - 1||_1 over the selected elements; "mean" averages (1 - M) over each
class's selected elements and then over the classes that have any. The sum grows with the
number of selected pairs (up to ~10^6 per class at paper scale), the mean stays in [0, 1 - T_cos].

`cosine_loss` has three implementations that give the same value and gradient:
"reference" (plain autograd, one class at a time: the one to read next to eq. 9-10),
"sorted" (rows sorted by class once, a hand-written backward; the fast path on CPU) and
"grouped" (one `torch._grouped_mm` over all classes with static shapes; meant for GPUs).

Order within a training step, as in Fig. 2: process A -> enqueue -> process B -> cosine_loss
-> backward. The "sorted" backward reads the dictionary, so an enqueue between the loss and its
backward pass is an error (autograd reports the in-place change).
"""
from __future__ import annotations

import warnings
from typing import Sequence, Union

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255  # the ignore label (cosuda.labels.IGNORE_INDEX; repeated to import only torch)
EPS = 1e-12  # norms are clamped to EPS (as in F.normalize): a zero vector has cosine 0, never NaN

__all__ = [
    "process_a", "process_a_masked", "process_b", "FeatureDictionary", "cosine_loss", "layer_thresholds",
    "cosine_loss_layers", "resize_nearest", "predicted_classes", "grouped_available",
]


# --------------------------------------------------------------------------------------------
# Processes A and B (eq. 6-8, supplementary B; eq. 16-18 for FCN-8s)
# --------------------------------------------------------------------------------------------
def resize_nearest(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Integer map (B, H, W) -> int64 (B, h, w) by nearest neighbour (I_nearest in eq. 6).

    The map goes through float32, which holds every integer below 2**24 exactly, so class ids
    and the ignore value 255 come out unchanged (never blended with a neighbour).
    """
    if tuple(label.shape[-2:]) == tuple(size):
        return label.long()
    return F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def predicted_classes(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """c_max = argmax over classes of p (eq. 6-8), as int64 (B, h, w).

    FCN-8s predicts at full resolution: the argmax is taken there first and the class map is
    then resized to the feature map's (h, w) by nearest neighbour (supplementary D, eq. 16).
    """
    return resize_nearest(logits.detach().argmax(dim=1), size)


def _flatten(features: torch.Tensor) -> torch.Tensor:
    """(B, k, h, w) -> (B*h*w, k): one row per pixel, in (b, y, x) order."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def _check_maps(fn: str, features: torch.Tensor, logits: torch.Tensor, labels, what: str) -> None:
    if features.dim() != 4:
        raise ValueError(f"{fn}: features must be (B, k, h, w), got shape {tuple(features.shape)}")
    if logits.dim() != 4 or logits.shape[0] != features.shape[0]:
        raise ValueError(f"{fn}: logits must be (B, C, h, w) with B = {features.shape[0]} like the "
                         f"features, got shape {tuple(logits.shape)}")
    if labels is not None and (labels.dim() != 3 or labels.shape[0] != features.shape[0]):
        raise ValueError(f"{fn}: {what} must be (B, H, W) with B = {features.shape[0]}, got shape "
                         f"{tuple(labels.shape)}; add a batch dimension with {what}[None]")
    if labels is not None and labels.is_floating_point():
        raise ValueError(f"{fn}: {what} must hold integer trainIds, got dtype {labels.dtype}")


def process_a(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Process A (eq. 6): the source vectors that the network classifies correctly.

    features f^s (B, k, h, w), logits p^s (B, C, h, w) or (B, C, H, W), labels y^s (B, H, W).
    Returns feats (N, k) and their classes int64 (N,), rows in (b, y, x) order. A pixel is kept
    when argmax p^s equals the label resized to (h, w) by nearest neighbour; ignore-labelled
    (255) pixels never match a class, so they are never returned.
    """
    feats, classes, correct = process_a_masked(features, logits, labels)
    keep = correct.nonzero().squeeze(1)               # the one data-dependent shape of process A
    return feats[keep], classes[keep]                 # S^c for every c, stacked


def process_a_masked(features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Process A with static shapes: every source row, its predicted class and the eq. 6 mask.

    Returns feats (B*h*w, k), classes int64 (B*h*w,) and correct bool (B*h*w,). `process_a` is
    this followed by `feats[correct]`; `FeatureDictionary.enqueue(feats, classes, keep=correct)`
    stores the same rows without ever building a tensor whose size depends on the data, which
    is what a captured (CUDA-graph) step needs.
    """
    _check_maps("process_a", features, logits, labels, "labels")
    size = tuple(features.shape[-2:])
    c_max = predicted_classes(logits, size)           # c^s_max
    y_tilde = resize_nearest(labels, size)            # y~^s = I_nearest(y^s)
    correct = (c_max == y_tilde).flatten()            # c_hat^s_max: the correct pixels
    return _flatten(features), c_max.flatten(), correct


def process_b(features: torch.Tensor, logits: torch.Tensor,
              pseudo_labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Process B: every target vector with a class (eq. 7 with pseudo-labels, eq. 8 without).

    features f^t (B, k, h, w), logits p^t (B, C, h, w) or (B, C, H, W), pseudo_labels
    y_hat^t (B, H, W) or None. Returns feats (B*h*w, k) and classes int64 (B*h*w,).
    eq. 7: the pseudo-label resized to (h, w) by nearest neighbour, "augmented" with the
    current argmax where it is 255. eq. 8 (no pseudo-labels): the current argmax everywhere.
    """
    _check_maps("process_b", features, logits, pseudo_labels, "pseudo_labels")
    size = tuple(features.shape[-2:])
    c_max = predicted_classes(logits, size)           # c^t_max
    if pseudo_labels is None:
        classes = c_max                               # eq. 8
    else:
        y_tilde = resize_nearest(pseudo_labels, size)  # y~^t
        classes = torch.where(y_tilde == IGNORE_INDEX, c_max, y_tilde)  # y_dot^t = augment(y~^t, c^t_max)
        _check_class_range(classes, logits.shape[1], "process_b: pseudo_labels")
    return _flatten(features), classes.flatten()


def _check_class_range(classes: torch.Tensor, num_classes: int, what: str) -> None:
    """Class ids must lie in [0, num_classes). Checked without a host sync on accelerators. Not
    checked inside a compiled (captured) step, which cannot raise: there the labels are valid by
    construction (`cosuda.data` maps every value of a label file that is not a trainId to 255)."""
    if classes.numel() == 0 or torch.compiler.is_compiling():
        return
    if classes.device.type == "cpu":
        low, high = int(classes.min()), int(classes.max())
        if low < 0 or high >= num_classes:
            raise ValueError(f"{what} hold class ids in [{low}, {high}], outside [0, {num_classes}) "
                             f"(255 is the only other value allowed in labels)")
    else:
        torch._assert_async(((classes >= 0) & (classes < num_classes)).all(),
                            f"{what} hold class ids outside [0, {num_classes})")


def _bincount(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows per class (num_classes,) int64, classes in [0, num_classes): torch.bincount with a
    shape that never depends on the data (bincount's does), so it can be captured."""
    zeros = torch.zeros(num_classes, dtype=torch.int64, device=classes.device)
    return zeros.index_add_(0, classes, torch.ones_like(classes))


# --------------------------------------------------------------------------------------------
# The source feature dictionary D (section 3.2)
# --------------------------------------------------------------------------------------------
class FeatureDictionary:
    """D: for each class c, a queue D^c of the newest `size` source feature vectors (dict-size).

    Storage is one preallocated ring buffer, (num_classes, slots, dim) plus one scratch row,
    with slots = size rounded up to a multiple of 8 (see __init__), plus, per class, a write
    pointer and a count, all on the device (allocated on the first enqueue, on the features'
    device, unless `device` is given). `enqueue` is index arithmetic on the device: no loop
    over classes, no host sync, no reallocation. `dtype` is the storage precision (float16 /
    bfloat16 halve the memory: 19 x 2500 x 2048 floats are 389 MB in float32).

    The reciprocal norm of every stored vector is kept beside it, so the loss never has to
    re-read the whole buffer to normalise it.
    """

    def __init__(self, num_classes: int, size: int, dim: int,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32):
        for name, value in (("num_classes", num_classes), ("size", size), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"FeatureDictionary: {name} must be a positive int, got {value!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"FeatureDictionary: dtype must be a floating torch.dtype, got {dtype!r}")
        self.num_classes, self.size, self.dim, self.dtype = num_classes, size, dim, dtype
        # Slots per class in memory: size rounded up to a multiple of 8, so that the loss's
        # (rows, slots) similarity matrix has 16-byte aligned rows, as grouped GEMMs require.
        # The slots beyond `size` are never written: empty, like a queue not yet full.
        self.slots = -(-size // 8) * 8
        self._storage = None  # (C*slots + 1, dim); the last row is a scratch row (see enqueue)
        self._inv_norms = None  # (C*slots + 1,) float32: 1 / max(||v||, EPS), 0 for empty slots
        self._ptr = None  # (C,) int64: the slot the next vector of the class overwrites
        self._total = None  # (C,) int64: vectors of the class ever enqueued
        if device is not None:
            self._allocate(torch.device(device))

    def _allocate(self, device: torch.device) -> None:
        rows = self.num_classes * self.slots + 1
        self._storage = torch.zeros(rows, self.dim, dtype=self.dtype, device=device)
        self._inv_norms = torch.zeros(rows, dtype=torch.float32, device=device)
        self._ptr = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        self._total = torch.zeros(self.num_classes, dtype=torch.int64, device=device)

    # --- the queue ----------------------------------------------------------------------------
    def enqueue(self, feats: torch.Tensor, classes: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Store detached copies of feats (N, dim) under classes (N,) (process A's output).

        Within one call later rows are newer; when more than `size` vectors of a class arrive
        at once, only the newest `size` are kept. The oldest vectors of a class are overwritten.
        `keep` (N,) bool, optional: only those rows are stored (`process_a_masked`'s mask); the
        others are ignored, classes included, with no data-dependent shape anywhere.
        """
        if feats.dim() != 2 or feats.shape[1] != self.dim:
            raise ValueError(f"FeatureDictionary.enqueue: feats must be (N, {self.dim}), got "
                             f"{tuple(feats.shape)}")
        if classes.dim() != 1 or classes.shape[0] != feats.shape[0] or classes.is_floating_point():
            raise ValueError(f"FeatureDictionary.enqueue: classes must be integer (N,) with "
                             f"N = {feats.shape[0]}, got {classes.dtype} {tuple(classes.shape)}")
        if keep is not None and (keep.shape != classes.shape or keep.dtype != torch.bool):
            raise ValueError(f"FeatureDictionary.enqueue: keep must be a bool (N,) mask with "
                             f"N = {feats.shape[0]}, got {keep.dtype} {tuple(keep.shape)}")
        if self._storage is None:
            self._allocate(feats.device)
        with torch.no_grad():  # a context, not a decorator: torch.compile traces through it
            self._enqueue(feats, classes, keep)

    def _enqueue(self, feats: torch.Tensor, classes: torch.Tensor, keep: torch.Tensor | None) -> None:
        device, C, S = self._storage.device, self.num_classes, self.size
        feats = feats.detach().to(device=device, dtype=self.dtype)
        classes = classes.to(device=device, dtype=torch.int64)
        if keep is None:
            _check_class_range(classes, C, "FeatureDictionary.enqueue: classes")
        else:  # rows not kept form an extra group C, whose rows all go to the scratch row
            keep = keep.to(device)
            _check_class_range(torch.where(keep, classes, 0), C, "FeatureDictionary.enqueue: classes")
            classes = torch.where(keep, classes, C)
        n = classes.shape[0]
        # rank = position of a row among this call's rows of its class (0 = oldest)
        n_new = _bincount(classes, C + 1)                             # (C+1,), group C = not kept
        order = torch.argsort(classes, stable=True)                   # class blocks, call order inside
        first = torch.cumsum(n_new, 0) - n_new                        # where each block starts
        rank = torch.empty_like(classes)
        rank[order] = torch.arange(n, device=device) - first[classes[order]]
        # Only the newest `size` rows of a class fit. The others are sent to the scratch row,
        # so every row is written with one index_copy_ and no data-dependent shape.
        fits = (rank >= n_new[classes] - S) & (classes < C)
        slot = (self._ptr.index_select(0, classes.clamp(max=C - 1)) + rank) % S
        row = torch.where(fits, classes * self.slots + slot, torch.full_like(slot, C * self.slots))
        self._storage.index_copy_(0, row, feats)
        norms = torch.linalg.vector_norm(feats, dim=1, dtype=torch.float32)
        self._inv_norms.index_copy_(0, row, 1.0 / norms.clamp_min(EPS))
        # in place, so that a captured step keeps writing the same memory
        self._ptr.add_(n_new[:C]).remainder_(S)
        self._total.add_(n_new[:C])

    def get(self, c: int) -> torch.Tensor:
        """D^c: (n_c, dim) copy of the newest min(size, enqueued) vectors of class c, oldest first."""
        if not 0 <= c < self.num_classes:
            raise IndexError(f"FeatureDictionary.get: class {c} outside [0, {self.num_classes})")
        if self._storage is None:
            return torch.empty(0, self.dim, dtype=self.dtype)
        total, ptr = int(self._total[c]), int(self._ptr[c])
        ring = self.buffer[c]
        if total < self.size:  # not yet wrapped: slots 0 .. total-1 in arrival order
            return ring[:total].clone()
        return torch.cat([ring[ptr:], ring[:ptr]])  # the pointer marks the oldest vector

    # --- accessors for the loss (static shapes, no host sync) ----------------------------------
    @property
    def device(self) -> torch.device | None:
        return None if self._storage is None else self._storage.device

    @property
    def buffer(self) -> torch.Tensor:
        """The ring buffer (num_classes, size, dim), slots in storage order (not chronological)."""
        if self._storage is None:
            self._allocate(torch.device("cpu"))
        return self._storage[:-1].view(self.num_classes, self.slots, self.dim)[:, :self.size]

    @property
    def inv_norms(self) -> torch.Tensor:
        """(num_classes, size) float32: 1 / max(||v||, EPS) of each slot, 0 for empty slots."""
        if self._storage is None:
            self._allocate(torch.device("cpu"))
        return self._inv_norms[:-1].view(self.num_classes, self.slots)[:, :self.size]

    @property
    def counts(self) -> torch.Tensor:
        """(num_classes,) int64: vectors held per class, min(size, enqueued)."""
        if self._storage is None:
            return torch.zeros(self.num_classes, dtype=torch.int64)
        return self._total.clamp(max=self.size)

    @property
    def enqueued(self) -> torch.Tensor:
        """(num_classes,) int64: vectors ever enqueued per class."""
        if self._storage is None:
            return torch.zeros(self.num_classes, dtype=torch.int64)
        return self._total.clone()

    def padded(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the loss reads: the buffer (C, slots, dim), 1/||v|| (C, slots) and the mask of
        held vectors (C, slots), slots = size rounded up to a multiple of 8 (extra slots empty)."""
        if self._storage is None:
            self._allocate(torch.device("cpu"))
        C = self.num_classes
        return (self._storage[:-1].view(C, self.slots, self.dim), self._inv_norms[:-1].view(C, self.slots),
                self._held(self.slots))

    def valid_mask(self) -> torch.Tensor:
        """(num_classes, size) bool: which slots hold a vector (slots fill from 0 upwards)."""
        return self._held(self.size)

    def _held(self, n_slots: int) -> torch.Tensor:
        """(num_classes, n_slots) bool: slot j of class c holds a vector iff j < counts[c]."""
        slots = torch.arange(n_slots, device=self.buffer.device)
        return slots[None, :] < self.counts.to(slots.device)[:, None]

    # --- checkpoints and devices ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: buffer, pointers, counts, size, dtype (copies)."""
        empty = self._storage is None
        return {
            "num_classes": self.num_classes, "size": self.size, "dim": self.dim,
            "dtype": str(self.dtype).replace("torch.", ""),
            "buffer": None if empty else self.buffer.clone(),
            "ptr": None if empty else self._ptr.clone(),
            "total": None if empty else self._total.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("num_classes", "size", "dim"):
            if state[key] != getattr(self, key):
                raise ValueError(f"FeatureDictionary.load_state_dict: saved {key} = {state[key]} but this "
                                 f"dictionary has {key} = {getattr(self, key)}; build it with the "
                                 f"saved configuration")
        self.dtype = getattr(torch, state["dtype"])
        if state["buffer"] is None:
            self._storage = self._inv_norms = self._ptr = self._total = None
            return
        if self._storage is None or self._storage.dtype != self.dtype:  # else refill in place (a
            self._allocate(self.device or state["buffer"].device)         # captured step keeps its memory)
        self.buffer.copy_(state["buffer"])
        self._ptr.copy_(state["ptr"])
        self._total.copy_(state["total"])
        # the reciprocal norms are derived data: recomputed, so they match the loaded buffer
        norms = torch.linalg.vector_norm(self.buffer, dim=2, dtype=torch.float32)
        self.inv_norms.copy_(torch.where(self.valid_mask(), 1.0 / norms.clamp_min(EPS), 0.0))

    def to(self, device: str | torch.device) -> "FeatureDictionary":
        """Move the buffers to `device` (in place); returns self."""
        device = torch.device(device)
        if self._storage is not None:
            self._storage, self._inv_norms = self._storage.to(device), self._inv_norms.to(device)
            self._ptr, self._total = self._ptr.to(device), self._total.to(device)
        else:
            self._allocate(device)
        return self

    def __repr__(self) -> str:
        return (f"FeatureDictionary(num_classes={self.num_classes}, size={self.size}, dim={self.dim}, "
                f"dtype={self.dtype}, device={self.device})")


# --------------------------------------------------------------------------------------------
# The cosine similarity loss (eq. 9-10)
# --------------------------------------------------------------------------------------------
Bank = Union[FeatureDictionary, Sequence[torch.Tensor]]
IMPLS = ("auto", "reference", "sorted", "grouped")


def cosine_loss(feats: torch.Tensor, classes: torch.Tensor, bank: Bank, threshold: float,
                num_classes: int, reduction: str = "mean", *, impl: str = "auto") -> torch.Tensor:
    """L_cos (eq. 9-10) between target vectors and the source vectors of the same class.

    feats T (N, k) and classes (N,) come from process B; bank is a FeatureDictionary or a
    sequence of num_classes tensors D^c (n_c, k) (n_c may be 0). For each class c:
    M^c = cosine similarities (N_c, n_c) (eq. 9), selected = M^c > threshold, and the loss
    pulls the selected elements to 1 through |1 - M| (eq. 10). The bank is a constant: no
    gradient reaches it (the paper detaches D^c).

    reduction "sum":  (1 / num_classes) * sum_c sum_selected (1 - M)        (eq. 10 literally)
    reduction "mean": mean over classes with a selected element of the mean of (1 - M) there;
                      0 when nothing is selected.
    Returns a float32 scalar, differentiable w.r.t. feats in every case (also when it is 0).
    Sums are accumulated in float32 whatever the input precision.

    impl: "reference" (plain autograd, one class at a time), "sorted" (CPU default),
    "grouped" (torch._grouped_mm, for GPUs; falls back to "sorted" with a warning where it
    cannot run), "auto" (grouped on CUDA or inside torch.compile where it can run, else sorted).
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cosine_loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    if impl not in IMPLS:
        raise ValueError(f"cosine_loss: impl must be one of {IMPLS}, got {impl!r}")
    if feats.dim() != 2 or not feats.is_floating_point():
        raise ValueError(f"cosine_loss: feats must be a float (N, k) tensor, got {feats.dtype} "
                         f"{tuple(feats.shape)}")
    if classes.dim() != 1 or classes.shape[0] != feats.shape[0] or classes.is_floating_point():
        raise ValueError(f"cosine_loss: classes must be integer (N,) with N = {feats.shape[0]}, got "
                         f"{classes.dtype} {tuple(classes.shape)}")
    threshold = float(threshold)
    classes = classes.to(feats.device, torch.int64)
    _check_class_range(classes, num_classes, "cosine_loss: classes")
    _check_bank(bank, num_classes, feats)

    if feats.shape[0] == 0 or (isinstance(bank, FeatureDictionary) and bank.device is None):
        return _zero(feats)  # no target vectors, or a dictionary that was never filled
    if impl == "auto":
        # grouped where it is fast (CUDA) or needed (a captured step: "sorted" reads its class
        # sizes on the host)
        fast_or_needed = feats.is_cuda or torch.compiler.is_compiling()
        impl = "grouped" if fast_or_needed and grouped_available(feats) else "sorted"
    if impl == "grouped" and not grouped_available(feats):
        warnings.warn(f"cosine_loss: impl='grouped' cannot run here ({feats.device}, {feats.dtype}, "
                      f"torch {torch.__version__}); using impl='sorted'", stacklevel=2)
        impl = "sorted"
    with torch.autocast(feats.device.type, enabled=False):  # the precision of feats decides
        if impl == "reference":
            banks = _class_banks(bank, num_classes, feats.shape[1])
            return _loss_reference(feats, classes, banks, threshold, num_classes, reduction)
        padded, inv_norms, valid = _padded_bank(bank, num_classes, feats.shape[1], feats.dtype)
        return _CosineLoss.apply(feats, classes, padded, inv_norms, valid, threshold, num_classes,
                                 reduction, impl == "grouped")


def _zero(feats: torch.Tensor) -> torch.Tensor:
    """A float32 zero that still backpropagates (a zero gradient) into feats."""
    return feats.sum().float() * 0.0


def _check_bank(bank: Bank, num_classes: int, feats: torch.Tensor) -> None:
    k = feats.shape[1]
    if isinstance(bank, FeatureDictionary):
        if bank.num_classes != num_classes or bank.dim != k:
            raise ValueError(f"cosine_loss: the FeatureDictionary has {bank.num_classes} classes of "
                             f"dim {bank.dim}, the target vectors {num_classes} classes of dim {k}")
        if bank.device is not None and bank.device != feats.device:
            raise ValueError(f"cosine_loss: the FeatureDictionary is on {bank.device}, feats on "
                             f"{feats.device}; move one with .to(...)")
        return
    if len(bank) != num_classes:
        raise ValueError(f"cosine_loss: bank must hold num_classes = {num_classes} tensors, got {len(bank)}")
    for c, d in enumerate(bank):
        if d.numel() > 0 and (d.dim() != 2 or d.shape[1] != k):
            raise ValueError(f"cosine_loss: bank[{c}] must be (n_c, {k}), got {tuple(d.shape)}")
        if d.numel() > 0 and d.device != feats.device:
            raise ValueError(f"cosine_loss: bank[{c}] is on {d.device}, feats on {feats.device}")


def _class_banks(bank: Bank, num_classes: int, k: int) -> list[torch.Tensor]:
    """D^c for every class as (n_c, k) tensors, detached (the paper detaches D^c)."""
    if isinstance(bank, FeatureDictionary):
        n = bank.counts.tolist()
        return [bank.buffer[c, :n[c]] for c in range(num_classes)]  # order inside D^c is irrelevant
    return [d.detach().reshape(-1, k) for d in bank]


def _unit_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """x (N, k), a temporary that is overwritten when float32 -> x / max(||x||, EPS) in x's dtype,
    1 / max(||x||, EPS) float32 (N,), and the rows whose norm is above EPS (N,) bool."""
    norm = torch.linalg.vector_norm(x, dim=1, dtype=torch.float32)
    inv = 1.0 / norm.clamp_min(EPS)
    if x.dtype == torch.float32:
        unit = x.mul_(inv[:, None])
    else:  # scale in float32 and round once (float16 cannot even hold 1 / EPS)
        unit = (x * inv[:, None]).to(x.dtype)
    return unit, inv, norm > EPS


# --- "reference": plain autograd, one class at a time ------------------------------------------
def _loss_reference(feats, classes, banks, threshold, num_classes, reduction):
    sums, means = [], []
    for c in range(num_classes):
        t = feats[classes == c]                                  # T^c (rows instead of columns)
        d = banks[c].to(feats.dtype)                             # D^c, a constant
        if t.shape[0] == 0 or d.shape[0] == 0:
            continue
        t_unit = t / torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min(EPS)
        d_unit = d / torch.linalg.vector_norm(d, dim=1, keepdim=True).clamp_min(EPS)
        m = t_unit @ d_unit.T                                    # M^c, eq. 9
        selected = m > threshold                                 # 1[M^c > T_cos], eq. 10
        if not selected.any():
            continue
        distance = (1.0 - m[selected]).float()                   # |M_hat^c - 1| on the selected elements
        sums.append(distance.sum())
        means.append(distance.mean())
    if not sums:
        return _zero(feats)
    if reduction == "sum":
        return torch.stack(sums).sum() / num_classes
    return torch.stack(means).mean()


def _class_weights(loss_c, count_c, num_classes, reduction):
    """Loss and per-class weight w_c = dL / d(sum_selected (1 - M^c)) from per-class sums (C,)."""
    if reduction == "sum":
        weight = torch.full_like(loss_c, 1.0 / num_classes)
        return loss_c.sum() / num_classes, weight
    active = count_c > 0
    n_active = active.sum().clamp_min(1)
    weight = torch.where(active, 1.0 / (count_c.clamp_min(1) * n_active), 0.0)
    return (loss_c * weight).sum(), weight


# --- "sorted" and "grouped": all classes at once, hand-written backward --------------------------
def grouped_available(feats: torch.Tensor) -> bool:
    """Whether impl="grouped" can run for these target vectors on this torch build."""
    if not hasattr(torch, "_grouped_mm") or feats.shape[1] * feats.element_size() % 16:
        return False  # rows must be 16-byte aligned
    if feats.device.type == "cpu":  # traced, its shape function accepts only 16-bit inputs
        traced = torch.compiler.is_compiling()
        return feats.dtype == torch.bfloat16 or (feats.dtype == torch.float32 and not traced)
    if feats.device.type == "cuda":  # cuBLAS grouped GEMM: bfloat16 on Hopper or newer
        return feats.dtype == torch.bfloat16 and torch.cuda.get_device_capability(feats.device)[0] >= 9
    return False


def _padded_bank(bank: Bank, num_classes: int, k: int, dtype: torch.dtype):
    """Every D^c in one (C, S, k) tensor of `dtype`, with (C, S) float32 1/||D^c_j|| (0 for empty
    slots) and the (C, S) mask of real vectors. A dictionary already is this (its ring buffer);
    a list is padded with zero rows to S = its largest n_c rounded up to a multiple of 8."""
    if isinstance(bank, FeatureDictionary):
        buffer, inv_norms, valid = bank.padded()
        return buffer.to(dtype), inv_norms, valid
    banks = [d.detach().reshape(-1, k) for d in bank]
    size = max(8, -(-max(d.shape[0] for d in banks) // 8) * 8)
    device = next((d.device for d in banks if d.numel()), banks[0].device)
    padded = torch.zeros(num_classes, size, k, dtype=dtype, device=device)
    inv_norms = torch.zeros(num_classes, size, dtype=torch.float32, device=device)
    valid = torch.zeros(num_classes, size, dtype=torch.bool, device=device)
    for c, d in enumerate(banks):
        n = d.shape[0]
        padded[c, :n] = d
        inv_norms[c, :n] = 1.0 / torch.linalg.vector_norm(d, dim=1, dtype=torch.float32).clamp_min(EPS)
        valid[c, :n] = True
    return padded, inv_norms, valid


class _CosineLoss(torch.autograd.Function):
    """Eq. 9-10 for all classes at once, with the rows of T sorted by class (T^c is then one
    contiguous block) and M an (N, S) matrix: each target row against the S slots of its class.

    Forward: M = T_unit @ D^c.T, one product per class ("sorted") or one grouped product
    ("grouped"), each column scaled by 1/||D^c_j|| (eq. 9). Then, in place, relu(M - T_cos):
    its row sums give sum_selected (1 - M) = n_selected (1 - T_cos) - sum relu(M - T_cos), its
    sign is the selection 1[M > T_cos]. Only that mask (divided by ||D^c_j||) is kept; "sorted"
    allocates no other (N, S) tensor ("grouped" also gathers the (N, S) column scales).
    Backward: dL/dT_unit = -w_c * mask @ D^c, then the backward of the row normalisation.
    """

    @staticmethod
    def forward(ctx, feats, classes, bank, inv_norms, valid, threshold, num_classes, reduction, grouped):
        order = torch.argsort(classes)
        sorted_classes = classes.index_select(0, order)
        rows_per_class = _bincount(classes, num_classes)
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
        excess = m.sum(dim=1, dtype=torch.float32)
        m.sign_()                                                # 1[M > T_cos]
        count = m.sum(dim=1, dtype=torch.float32)
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
        selected_sum = (count * t_used.float() + excess) * not_tiny
        ctx.grouped, ctx.offsets = grouped, offsets
        ctx.save_for_backward(unit, inv_norm, selected_sum, order, sorted_classes, m, bank, weight.float())
        return loss.float()

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
        g = grad_unit.float()                                     # in place when float32
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


# --------------------------------------------------------------------------------------------
# FCN-8s: three layers (supplementary D, eq. 19-20)
# --------------------------------------------------------------------------------------------
def layer_thresholds(t_cos: float, n_layers: int = 3, step: float = 0.1) -> tuple[float, ...]:
    """T_cos for each layer, deepest first: (T, T + 0.1, T + 0.2) for fc7, pool4, pool3.

    Shallower layers get higher thresholds (supplementary D), so that only clearly similar
    vectors are pulled together there.
    """
    return tuple(round(t_cos + i * step, 10) for i in range(n_layers))


def cosine_loss_layers(feats_list: Sequence[torch.Tensor], classes_list: Sequence[torch.Tensor],
                       banks: Sequence[Bank], thresholds: Sequence[float], num_classes: int,
                       reduction: str = "mean", *, impl: str = "auto") -> torch.Tensor:
    """Eq. 20: the mean over layers l of cosine_loss(T_l, D_l, T_cos_l) (one dictionary per layer)."""
    n = len(feats_list)
    if not (n == len(classes_list) == len(banks) == len(thresholds)) or n == 0:
        raise ValueError(f"cosine_loss_layers: need as many feats, classes, banks and thresholds "
                         f"(one per layer), got {n}, {len(classes_list)}, {len(banks)}, {len(thresholds)}")
    losses = [cosine_loss(f, c, b, t, num_classes, reduction, impl=impl)
              for f, c, b, t in zip(feats_list, classes_list, banks, thresholds)]
    return torch.stack(losses).mean()
