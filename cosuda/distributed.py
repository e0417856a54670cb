"""The few collective operations the engine needs, as no-ops in a single process.

Under `torchrun --nproc_per_node N -m cosuda.train ...` every rank trains on its own
1 source + 1 target image (DDP averages the gradients); process-A features of all ranks are
all-gathered so that every rank enqueues the same vectors and holds the same dictionary;
evaluation and pseudo-labelling are sharded over ranks and their confusion matrices /
threshold histograms summed. Backend: NCCL on GPUs, gloo on CPU.

Each process works on its own GPU only: `init_from_env` makes cuda:LOCAL_RANK the current
device before it joins the group (bound to it with `device_id`), `bf16_supported` asks that
device, the engine saves and restores that device's random generator alone, and a run leaves
the group it joined (`destroy`) when it ends.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: str | torch.device) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE set), else do nothing.

    On CUDA the process first makes its own GPU (`device`, normally cuda:LOCAL_RANK) the current
    one, so that nothing it allocates lands on GPU 0, and binds the NCCL group to it
    (`device_id`). Returns True if this call created the group (the caller then `destroy()`s it
    at the end of its run), False if there was nothing to do or a group already existed.
    """
    device = torch.device(device)
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if device.type == "cuda":
        dist.init_process_group(backend="nccl", device_id=device)
    else:
        dist.init_process_group(backend="gloo")
    return True


def destroy() -> None:
    """Leave the process group (if any): the end of a run under torchrun."""
    if is_distributed():
        dist.destroy_process_group()


def bf16_supported(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively, asking that GPU only (torch.cuda.is_bf16_supported
    asks the current device, GPU 0 in a process that has not set its own)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    if torch.version.hip:
        return True
    return torch.cuda.get_device_properties(device).major >= 8


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In place sum over ranks (confusion matrices, histograms); returns `t`."""
    if is_distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def average_gradients(module: torch.nn.Module) -> None:
    """Average .grad over ranks, for a module that is not wrapped in DDP (the discriminator:
    its parameters are frozen during the segmentation network's step, which DDP cannot express)."""
    if not is_distributed():
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world_size()


def all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the (n, ...) tensors of all ranks in rank order: (world_size * n, ...).

    Every rank must hold the same shape: the step gathers process A's every row with its keep
    mask (`process_a_masked`) at the presets' fixed crop sizes. One all_gather_into_tensor, no
    row-count exchange, no host sync, so a captured step can hold it.
    """
    if not is_distributed():
        return x
    out = x.new_empty((world_size() * x.shape[0],) + tuple(x.shape[1:]))
    dist.all_gather_into_tensor(out, x.contiguous())
    return out

