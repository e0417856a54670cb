"""The method of the paper (section 3.2, supplementary B and D), in the order of Fig. 2.

    function / class          paper            what it computes
    ------------------------  ---------------  ----------------------------------------------
    process_a                 eq. 6            correctly classified source vectors S^c with their class
    process_b                 eq. 7 / eq. 8    target vectors T^c split by the augmented pseudo-label
                                               (eq. 7) or by the current prediction (eq. 8)
    FeatureDictionary         sec. 3.2         D^c: per class, a queue of the newest dict-size source vectors
    class_similarity          eq. 9            M^c = cos(T^c, D^c), a (N_c, n_c) matrix
    cosine_loss_from_matrices eq. 10           L1 between the elements M^c > T_cos and 1, from the M^c
    cosine_loss_reference     eq. 9-10         the two above, one class at a time, plain autograd
    cosine_loss               eq. 9-10         the same value and gradient, fast (cosuda.method_fast)
    layer_thresholds          suppl. D         T_cos, T_cos + 0.1, T_cos + 0.2 for fc7, pool4, pool3
    cosine_loss_layers        eq. 19-20        mean over layers of cosine_loss (FCN-8s)

One training step (Fig. 2): process A on the source image -> enqueue S^c into D -> process B
on the target image -> L_cos between each T^c and D^c -> backward (the dictionary is a
constant: no gradient reaches it).

Shapes follow the paper: feature maps f (B, k, h, w), class scores p (B, C, h, w) (FCN-8s gives
them at full resolution (B, C, H, W), supplementary D), labels y (B, H, W) with 255 = ignore.
The paper's [k x hw] matrices are rows here: flattened vectors are (N, k) in (b, y, x) order.

Two readings of eq. 10 are offered (`reduction`): "sum" is eq. 10 literally,
(1/C) sum_c ||M_hat^c - 1||_1 over the selected elements; "mean" averages (1 - M) over each
class's selected elements and then over the classes that have any. The sum grows with the
number of selected pairs (up to ~10^6 per class at paper scale), the mean stays in [0, 1 - T_cos].

The paper comes first in this file; the implementations follow it: the ring buffer behind
`FeatureDictionary`, and `cosine_loss`, which checks its inputs and runs the reference or one of
the fast implementations of `cosuda.method_fast` ("sorted", "grouped": how they work, and what
a captured CUDA-graph step requires of them, is described there).

Pure tensor math: this module imports only torch (and cosuda.method_fast, which imports only torch).
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence, Union

import torch
import torch.nn.functional as F

from .method_fast import EPS, accumulation_dtype, bincount_static, fast_cosine_loss, grouped_available, pad_bank

IGNORE_INDEX = 255  # the ignore label (cosuda.labels.IGNORE_INDEX; repeated to import only torch)

__all__ = [
    "process_a", "process_a_masked", "process_b", "FeatureDictionary", "class_similarity",
    "cosine_loss_from_matrices", "cosine_loss_reference", "cosine_loss", "layer_thresholds",
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


# --------------------------------------------------------------------------------------------
# The source feature dictionary D (section 3.2)
# --------------------------------------------------------------------------------------------
# D^c is a queue of the newest dict-size source vectors of class c: every iteration enqueues
# process A's S^c and the oldest vectors are dequeued, so a target vector of class c meets
# source vectors of many recent images, also when the current source image lacks class c (the
# "unmatching problem"). `FeatureDictionary` (below the loss) implements it as a ring buffer
# that behaves exactly like one `collections.deque(maxlen=dict_size)` per class.


# --------------------------------------------------------------------------------------------
# The cosine similarity loss (eq. 9-10)
# --------------------------------------------------------------------------------------------
def class_similarity(t: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Eq. 9: M^c = T^c^T D^c / (||T^c||^T ||D^c||), the cosine similarity of every target vector
    of class c with every dictionary vector of class c.

    t: T^c (N_c, k), the target vectors of class c (process B) as rows; d: D^c (n_c, k).
    Returns M^c (N_c, n_c), computed in t's dtype but at least float32. D^c is detached: the
    loss does not back-propagate through the dictionary. Norms are clamped to EPS (as in
    F.normalize): a zero vector has cosine 0 with everything, never NaN.
    """
    dtype = accumulation_dtype(t.dtype)               # float32 for 16-bit inputs; float64 stays
    t, d = t.to(dtype), d.detach().to(t.device, dtype)
    t_norm = torch.linalg.vector_norm(t, dim=1, keepdim=True).clamp_min(EPS)  # ||T^c||_2 (N_c, 1)
    d_norm = torch.linalg.vector_norm(d, dim=1, keepdim=True).clamp_min(EPS)  # ||D^c||_2 (n_c, 1)
    return (t / t_norm) @ (d / d_norm).T              # = (T^T D) / (||T||^T ||D||), eq. 9


def cosine_loss_from_matrices(matrices: Iterable[torch.Tensor], threshold: float, num_classes: int,
                              reduction: str = "mean") -> torch.Tensor:
    """Eq. 10 from the matrices M^c of eq. 9 (one (N_c, n_c) tensor per class that has one; a
    class without target or dictionary vectors has an empty matrix or none).

    M_hat^c = the elements of M^c above threshold T_cos; the loss is their L1 distance to 1:
      "sum":  (1/C) sum_c ||M_hat^c - 1||_1, C = num_classes         (eq. 10 read literally)
      "mean": the mean over the classes with a selected element of mean(1 - M_hat^c)
    Returns a 0-dim tensor in the matrices' dtype (float32 when there are none); 0 when
    nothing is selected.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"cosine loss: reduction must be 'mean' or 'sum', got {reduction!r}")
    matrices = list(matrices)
    distances = [1.0 - m[m > threshold] for m in matrices]   # |M_hat^c - 1| on the selected elements
    distances = [x for x in distances if x.numel() > 0]      # classes with nothing selected add nothing
    if not distances:  # 0, still connected to the M^c: a zero gradient flows back through them
        return sum((m.sum() for m in matrices), torch.zeros(())) * 0.0
    if reduction == "sum":
        return torch.cat(distances).sum() / num_classes        # eq. 10
    return torch.stack([x.mean() for x in distances]).mean()


def cosine_loss_reference(feats: torch.Tensor, classes: torch.Tensor, bank: Bank, threshold: float,
                          num_classes: int, reduction: str = "mean") -> torch.Tensor:
    """L_cos (eq. 9-10) the plain way: one class at a time, plain autograd. `cosine_loss` with
    impl="reference" checks its inputs and calls this; the fast implementations are tested
    against it.

    feats T (N, k) and classes (N,) from process B; bank a FeatureDictionary or a sequence of
    num_classes tensors D^c (n_c, k). Returns a 0-dim tensor in feats' dtype but at least
    float32, differentiable w.r.t. feats (also when it is 0).
    """
    matrices = [class_similarity(feats[classes == c], _class_bank(bank, c, feats.shape[1]))  # M^c, eq. 9
                for c in range(num_classes)]
    return cosine_loss_from_matrices(matrices, threshold, num_classes, reduction)  # eq. 10


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
    """Eq. 20: the mean over layers l of cosine_loss(T_l, D_l, T_cos_l) (one dictionary per layer).

    One entry per layer in each sequence: feats (N_l, k_l), classes (N_l,), a bank of dim k_l
    and a threshold. Returns a 0-dim tensor (float32; float64 for float64 feats).
    """
    n = len(feats_list)
    if not (n == len(classes_list) == len(banks) == len(thresholds)) or n == 0:
        raise ValueError(f"cosine_loss_layers: need as many feats, classes, banks and thresholds "
                         f"(one per layer), got {n}, {len(classes_list)}, {len(banks)}, {len(thresholds)}")
    losses = [cosine_loss(f, c, b, t, num_classes, reduction, impl=impl)
              for f, c, b, t in zip(feats_list, classes_list, banks, thresholds)]
    return torch.stack(losses).mean()


# ============================================================================================
# Implementations: the dictionary's ring buffer, and cosine_loss (checks, then an impl)
# ============================================================================================
class FeatureDictionary:
    """D: for each class c, a queue D^c of the newest `size` source feature vectors (dict-size).

    The queue (what it holds). Each class has its own queue of capacity `size`, exactly
    `collections.deque(maxlen=size)`:

        for f, c in zip(feats, classes):   # enqueue: rows in order, later rows are newer
            queue[c].append(f)             # a full queue drops its oldest vector
        get(c) == list(queue[c])           # D^c, oldest first: min(size, enqueued) vectors

    (tests/test_method.py checks the ring buffer against that deque.) Only the set of vectors
    in D^c matters to the loss, not their order.

    The ring buffer (how it holds them). Storage is preallocated once: `size` slots per class
    (rounded up to a multiple of 8, see __init__; the extra slots stay empty) and one scratch
    row, plus per class a pointer `ptr[c]` (the slot the next vector overwrites: once the queue
    is full, its oldest vector) and `total[c]` (vectors ever enqueued). The j-th vector of class
    c ever enqueued (j = 0, 1, ...) lives in slot j mod size, so `get` rotates the slots by
    `ptr[c]` to list them oldest first. One enqueue gives each row its rank among the call's
    rows of its class and writes it to slot (ptr[c] + rank) mod size; when a call brings more
    than `size` rows of a class, the older ones would be overwritten within the call, so they
    go to the scratch row instead. All of it is index arithmetic on the device: no loop over
    classes, no host sync, no reallocation, no data-dependent shape (a captured step can run it).

    Everything lives on one device (allocated on the first enqueue, on the features' device,
    unless `device` is given). `dtype` is the storage precision (float16 / bfloat16 halve the
    memory: 19 x 2500 x 2048 floats are 389 MB in float32). The reciprocal norm of every
    stored vector is kept beside it, in `accumulation_dtype(dtype)` (float32 for 16-bit
    storage, float64 for float64), so the loss never re-reads the whole buffer to normalise it.
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
        self._inv_norms = None  # (C*slots + 1,) at least float32: 1 / max(||v||, EPS), 0 for empty slots
        self._ptr = None  # (C,) int64: the slot the next vector of the class overwrites
        self._total = None  # (C,) int64: vectors of the class ever enqueued
        if device is not None:
            self._allocate(torch.device(device))

    def _allocate(self, device: torch.device) -> None:
        rows = self.num_classes * self.slots + 1
        self._storage = torch.zeros(rows, self.dim, dtype=self.dtype, device=device)
        self._inv_norms = torch.zeros(rows, dtype=accumulation_dtype(self.dtype), device=device)
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
        n_new = bincount_static(classes, C + 1)                             # (C+1,), group C = not kept
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
        norms = torch.linalg.vector_norm(feats, dim=1, dtype=self._inv_norms.dtype)  # never narrower
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
        """(num_classes, size): 1 / max(||v||, EPS) of each slot, 0 for empty slots; float32 (float64
        for float64 storage)."""
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
        """Everything needed to continue exactly: buffer, reciprocal norms, pointers, counts, size,
        dtype (copies).

        The reciprocal norms are saved as they are, not recomputed on load: a norm computed over
        the (C, size, dim) buffer rounds differently from the one enqueue computed over its
        (N, dim) rows (another summation order), and a resumed run must continue bit for bit."""
        empty = self._storage is None
        return {
            "num_classes": self.num_classes, "size": self.size, "dim": self.dim,
            "dtype": str(self.dtype).replace("torch.", ""),
            "buffer": None if empty else self.buffer.clone(),
            "inv_norms": None if empty else self.inv_norms.clone(),
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
        if state.get("inv_norms") is not None and state["inv_norms"].dtype == self._inv_norms.dtype:
            self.inv_norms.copy_(state["inv_norms"])  # exactly the values the saved run used
        else:  # a state without them (older checkpoints): recomputed from the loaded buffer
            norms = torch.linalg.vector_norm(self.buffer, dim=2, dtype=self._inv_norms.dtype)
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
    Returns a 0-dim tensor, float32 (float64 for float64 feats: sums are accumulated in at
    least float32 whatever the input precision, never narrower than it), differentiable
    w.r.t. feats in every case (also when it is 0). Autocast is off inside: feats' dtype decides.

    impl: "reference" (`cosine_loss_reference`: plain autograd, one class at a time), "sorted"
    (CPU default), "grouped" (torch._grouped_mm, for GPUs; falls back to "sorted" with a warning
    where it cannot run), "auto" (grouped on CUDA or inside torch.compile where it can run,
    else sorted). All give the same value and gradient; see cosuda.method_fast.
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
            return cosine_loss_reference(feats, classes, bank, threshold, num_classes, reduction)
        if isinstance(bank, FeatureDictionary):  # already padded: its ring buffer
            padded, inv_norms, valid = bank.padded()
        else:
            padded, inv_norms, valid = pad_bank([_class_bank(bank, c, feats.shape[1]) for c in range(num_classes)],
                                                num_classes, feats.dtype)
        return fast_cosine_loss(feats, classes, padded.to(feats.dtype), inv_norms, valid, threshold,
                                num_classes, reduction, grouped=impl == "grouped")


# --------------------------------------------------------------------------------------------
# Input checks and small helpers
# --------------------------------------------------------------------------------------------
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


def _class_bank(bank: Bank, c: int, k: int) -> torch.Tensor:
    """D^c (n_c, k), detached (the paper detaches D^c): from a dictionary or a list."""
    if isinstance(bank, FeatureDictionary):
        return bank.get(c)
    return bank[c].detach().reshape(-1, k)  # an empty entry may have any shape


def _zero(feats: torch.Tensor) -> torch.Tensor:
    """A zero in the loss's dtype that still backpropagates (a zero gradient) into feats."""
    return feats.sum().to(accumulation_dtype(feats.dtype)) * 0.0
