"""Numerics of the model forward on accelerators: weights stay fp32 and matrix products run under autocast.

Casting a whole model to bf16 (`model.to(torch.bfloat16)`) also runs its LayerNorms, softmax and residual sums
in bf16; on scGPT that left a 1% median relative error at layer 11. Autocast keeps those in fp32 and runs only
the matrix products in bf16/fp16, which is what the activations should be recorded with (issue 16, point 11).

`base.stream` (hence `atlas extract` and the build's streaming pass) runs the model this way:

    place(adapter.model, device)
    with autocast(device):
        out = adapter.layer_outputs(batch, layers)
"""

from __future__ import annotations

import contextlib

import torch


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA GPUs that have it, else fp16; fp16 on MPS; None (plain fp32) on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def place(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move `model` to `device` with fp32 weights (a model loaded in another dtype is brought back to fp32)."""
    return model.to(device=device, dtype=torch.float32).eval()


def autocast(device: torch.device, dtype: torch.dtype | None = None):
    """Autocast context for `device` (`dtype` overrides the default; the CPU runs fp32 unless one is given)."""
    dtype = dtype or autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
