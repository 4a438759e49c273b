"""TopK sparse autoencoders: the model and its file formats.

encode(x) = TopK(ReLU)((x - b_dec if apply_b_dec_to_input) @ W_enc + b_enc), decode(z) = z @ W_dec + b_dec.
W_dec holds one row per feature; training keeps every row at unit norm (the published code normalised the
other axis, one norm per input dimension, which leaves feature directions unnormalised).

Formats: SAELens (`cfg.json` + `sae_weights.safetensors`, architecture "topk"), written and read; and the
published study's torch file (`model_state_dict` with W_enc/W_dec Linear weights and biases, plus
`activation_mean.npy` subtracted from the input), read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import AtlasError
from ...fsutil import atomic_dir
from ...jsonio import read_json

CFG, WEIGHTS = "cfg.json", "sae_weights.safetensors"


class TopKSAE(nn.Module):
    def __init__(self, d_in: int, d_sae: int, k: int, apply_b_dec_to_input: bool = True,
                 rescale_acts_by_decoder_norm: bool = False, input_mean: np.ndarray | None = None):
        super().__init__()
        if not 0 < k <= d_sae:
            raise AtlasError(f"k = {k} must be between 1 and the number of features ({d_sae})")
        self.d_in, self.d_sae, self.k = d_in, d_sae, k
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.rescale = rescale_acts_by_decoder_norm
        self.W_enc = nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.W_dec = nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        # A fixed mean subtracted from the input and added back (the published format's activation_mean.npy).
        self.register_buffer("input_mean", None if input_mean is None else torch.as_tensor(input_mean, dtype=torch.float32))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_mean is not None:
            x = x - self.input_mean
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = torch.addmm(self.b_enc, x, self.W_enc)  # x W + b in one pass
        return pre * self.W_dec.norm(dim=1) if self.rescale else pre

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(values, indices), each (tokens, k): the k largest pre-activations, ReLU'd, and their features."""
        values, indices = torch.topk(self.pre_acts(x), self.k, dim=-1)
        return F.relu(values), indices

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        W = self.decoder()
        out = torch.einsum("tk,tkd->td", values, W[indices]) + self.b_dec
        return out + self.input_mean if self.input_mean is not None else out

    def decoder(self) -> torch.Tensor:
        """The decoder directions decode() adds up (unit rows when activations were rescaled by their norm)."""
        return self.W_dec / self.W_dec.norm(dim=1, keepdim=True) if self.rescale else self.W_dec

    @torch.no_grad()
    def reconstruct(self, values: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """decode() for evaluation, in numpy: one sparse (tokens x features) product instead of gathering k decoder
        rows per token (the same sum in another order)."""
        import scipy.sparse as sp

        t, k = values.shape
        rows = np.repeat(np.arange(t), k)
        S = sp.csr_matrix((values.ravel(), (rows, indices.ravel())), shape=(t, self.d_sae))
        out = S @ self.decoder().detach().numpy() + self.b_dec.detach().numpy()
        return out + self.input_mean.numpy() if self.input_mean is not None else out

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def save(self, out: Path, metadata: dict) -> Path:
        """Write the SAELens layout atomically (it has no field for the published format's fixed input mean)."""
        from safetensors.torch import save_file

        if self.input_mean is not None:
            raise AtlasError("an SAE with a fixed input mean (published format) cannot be saved in the SAELens layout")
        cfg = {"architecture": "topk", "d_in": self.d_in, "d_sae": self.d_sae, "k": self.k, "dtype": "float32",
               "device": "cpu", "apply_b_dec_to_input": self.apply_b_dec_to_input,
               "normalize_activations": "none", "reshape_activations": "none",
               "rescale_acts_by_decoder_norm": self.rescale, "metadata": metadata}
        with atomic_dir(out) as tmp:
            tensors = {n: p.detach().float().contiguous().cpu() for n, p in self.named_parameters()}
            save_file(tensors, tmp / WEIGHTS, metadata={"format": "pt"})
            (tmp / CFG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
        return out


def _saelens(folder: Path) -> TopKSAE:
    from safetensors.torch import load_file

    cfg = read_json(folder / CFG)
    arch = cfg.get("architecture")
    act = cfg.get("activation_fn_str") or cfg.get("activation_fn")  # SAELens < 6 spelled TopK this way
    if arch == "topk":
        k = cfg.get("k")
    elif act == "topk":
        kwargs = cfg.get("activation_fn_kwargs")
        k = kwargs.get("k") if isinstance(kwargs, dict) else None
    else:
        raise AtlasError(f"{folder / CFG}: architecture {arch!r} is not a TopK SAE (only TopK SAEs are supported)")
    if cfg.get("normalize_activations", "none") not in ("none", None):
        raise AtlasError(f"{folder / CFG}: normalize_activations {cfg['normalize_activations']!r} is not supported")
    try:
        state = load_file(folder / WEIGHTS)
    except Exception as e:
        raise AtlasError(f"{folder / WEIGHTS}: not a readable safetensors file ({e})") from None
    missing = [n for n in ("W_enc", "b_enc", "W_dec", "b_dec") if n not in state]
    if missing or not isinstance(k, int) or isinstance(k, bool):
        raise AtlasError(f"{folder}: SAELens TopK SAE without {', '.join(missing) or 'an integer k'}")
    _check_weights(folder / WEIGHTS, {n: state[n] for n in ("W_enc", "b_enc", "W_dec", "b_dec")})
    if state["W_enc"].ndim != 2:
        raise AtlasError(f"{folder / WEIGHTS}: W_enc has shape {tuple(state['W_enc'].shape)}, expected (d_in, d_sae)")
    d_in, d_sae = state["W_enc"].shape
    if state["W_dec"].shape != (d_sae, d_in) or state["b_enc"].shape != (d_sae,) or state["b_dec"].shape != (d_in,):
        raise AtlasError(f"{folder / WEIGHTS}: weight shapes do not fit W_enc {tuple(state['W_enc'].shape)}")
    for key, n in (("d_in", d_in), ("d_sae", d_sae)):
        if key in cfg and cfg[key] != n:
            raise AtlasError(f"{folder / CFG}: {key} is {cfg[key]!r}, but the weights have {n}")
    sae = TopKSAE(d_in, d_sae, k, bool(cfg.get("apply_b_dec_to_input", True)),
                  bool(cfg.get("rescale_acts_by_decoder_norm", False)))
    sae.load_state_dict({n: state[n].float() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}, strict=False)
    return sae


def _check_weights(where: Path, state: dict) -> None:
    """Refuse tensors that are not floating point or hold NaN/Inf: every code computed from them would be junk."""
    for name, t in sorted(state.items()):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            kind = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
            raise AtlasError(f"{where}: {name} is {kind}, expected a floating-point tensor")
        bad = t.numel() - int(torch.isfinite(t).sum())
        if bad:
            raise AtlasError(f"{where}: {name} holds {bad} NaN or infinite value(s)")


def _published(path: Path) -> TopKSAE:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AtlasError(f"{path}: not a readable torch file ({type(e).__name__})") from None
    state = blob.get("model_state_dict") if isinstance(blob, dict) else None
    names = ("W_enc.weight", "W_enc.bias", "W_dec.weight", "W_dec.bias")
    if not isinstance(state, dict) or any(n not in state for n in names):
        raise AtlasError(f"{path}: not a known SAE layout (expected model_state_dict with {', '.join(names)})")
    _check_weights(path, {n: state[n] for n in names})
    if state["W_enc.weight"].ndim != 2:
        raise AtlasError(f"{path}: W_enc.weight has shape {tuple(state['W_enc.weight'].shape)}, expected (d_sae, d_in)")
    d_sae, d_in = state["W_enc.weight"].shape
    shapes = {"W_enc.bias": (d_sae,), "W_dec.weight": (d_in, d_sae), "W_dec.bias": (d_in,)}
    bad = [n for n, shape in shapes.items() if tuple(state[n].shape) != shape]
    if bad:
        raise AtlasError(f"{path}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, expected {shapes[bad[0]]} "
                         f"(from W_enc.weight {tuple(state['W_enc.weight'].shape)})")
    k = blob.get("k")
    if not isinstance(k, int) or isinstance(k, bool):
        raise AtlasError(f"{path}: no integer k stored beside model_state_dict")
    mean_file = path.parent / "activation_mean.npy"
    try:
        mean = np.load(mean_file) if mean_file.is_file() else None
    except (ValueError, OSError, EOFError) as e:
        raise AtlasError(f"{mean_file}: not a readable .npy file ({e})") from None
    if mean is not None and (mean.shape != (d_in,) or not np.issubdtype(mean.dtype, np.floating)):
        raise AtlasError(f"{mean_file}: shape {mean.shape} of {mean.dtype}, expected ({d_in},) floats")
    if mean is not None and not np.isfinite(mean).all():
        raise AtlasError(f"{mean_file}: {mean.size - int(np.isfinite(mean).sum())} NaN or infinite value(s)")
    sae = TopKSAE(d_in, d_sae, k, apply_b_dec_to_input=False, input_mean=mean)
    with torch.no_grad():
        sae.W_enc.copy_(state["W_enc.weight"].T)
        sae.b_enc.copy_(state["W_enc.bias"])
        sae.W_dec.copy_(state["W_dec.weight"].T)
        sae.b_dec.copy_(state["W_dec.bias"])
    return sae


def load_sae(path: Path) -> TopKSAE:
    """A SAELens TopK folder, or the published study's .pt file (or a folder holding exactly one)."""
    path = Path(path)
    if path.is_dir() and (path / CFG).is_file():
        if not (path / WEIGHTS).is_file():
            raise AtlasError(f"{path}: has {CFG} but no {WEIGHTS}")
        return _saelens(path)
    if path.is_dir():
        pts = sorted(path.glob("*.pt"))
        if len(pts) != 1:
            raise AtlasError(f"{path}: not a known SAE layout (expected {CFG} + {WEIGHTS}, or one .pt file "
                             f"with model_state_dict and activation_mean.npy)")
        path = pts[0]
    if not path.is_file():
        raise AtlasError(f"{path}: SAE not found")
    return _published(path)
