"""Mixed precision: 16-bit arithmetic, fp32 master weights, and why fp16 needs loss scaling.

Micikevicius et al. 2017, "Mixed Precision Training" (arXiv:1710.03740), three pieces:

1. fp32 master weights: the optimizer updates an fp32 copy; forward and backward use 16-bit
   copies. (In PyTorch's autocast the parameters simply stay fp32 and each op casts its inputs.)
2. loss scaling: multiply the loss by S before backward, so gradients that would fall below
   fp16's smallest subnormal 2^-24 ~ 6e-8 stay representable; divide the gradients by S (in fp32)
   before the update. Too large an S overflows fp16's maximum 65,504 to inf, so dynamic scaling
   (`torch.amp.GradScaler`) skips such a step and halves S.
3. 16-bit storage with fp32 accumulation in matrix products and reductions.

bf16 keeps fp32's 8 exponent bits (range ~1e-38 .. 3e38) and gives up mantissa bits instead
(8 significant bits against fp16's 11), so its gradients do not underflow at these magnitudes
and loss scaling is usually unnecessary.

`gradient_underflow` shows point 2 on the CPU. It runs backward in a copy of the model cast to
fp16 (or bf16), so every activation gradient and weight gradient is computed and stored in the
16-bit format, as it is in the fp16 backward of autocast on a GPU, and counts the entries that
are non-zero in the fp32 reference but zero (underflow) or inf/nan (overflow) in 16 bits.
It is slightly stricter than autocast: the weights themselves are rounded to 16 bits, and ops
that autocast keeps in fp32 (softmax, norms) run in 16 bits here except where the model itself
upcasts (RMSNorm, the loss).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from .checks import positive_number
from .measure import count_parameters, memory_report, time_step, train_step_fn
from .train import PRECISIONS, check_precision, lm_loss

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
LOW_PRECISIONS = ("fp16", "bf16")


def number_formats(names: Sequence[str] = PRECISIONS) -> list[dict]:
    """Bit layout and range of each floating-point format, read from `torch.finfo`.

    >>> [(f["name"], f["exponent_bits"], f["mantissa_bits"]) for f in number_formats()]
    [('fp32', 8, 23), ('bf16', 8, 7), ('fp16', 5, 10)]
    """
    for name in names:
        if name not in DTYPES:
            raise ValueError(f"format must be one of {tuple(DTYPES)}, got {name!r}")
    rows = []
    for name in names:
        info = torch.finfo(DTYPES[name])
        mantissa = round(-math.log2(info.eps))  # eps = 2^-mantissa_bits
        rows.append({"name": name, "bits": info.bits, "exponent_bits": info.bits - 1 - mantissa,
                     "mantissa_bits": mantissa, "max": info.max, "smallest_normal": info.smallest_normal,
                     # subnormals: the smallest normal divided by 2^mantissa_bits
                     "smallest_subnormal": info.smallest_normal * info.eps, "eps": info.eps})
    return rows


def _gradients(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, loss_scale: float):
    """Weight gradients (by name) and activation gradients (embedding output, every block's
    output, the logits) of `loss_scale * loss`, in the dtype the backward produced them."""
    activations: list[torch.Tensor] = []

    def keep_grad(_module, _inputs, output):
        out = output[0] if isinstance(output, tuple) else output
        if out.requires_grad:
            out.register_hook(lambda g: activations.append(g.detach()))

    watched = [model.embed_tokens, *model.layers, model.lm_head]
    handles = [m.register_forward_hook(keep_grad) for m in watched]
    try:
        model.zero_grad(set_to_none=True)
        loss = lm_loss(model(ids), labels)  # lm_loss upcasts the logits: the loss is fp32
        (loss * loss_scale).backward()
    finally:
        for h in handles:
            h.remove()
    weights = {n: p.grad.detach() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return weights, activations, loss.item()


def _count(reference: list[torch.Tensor], low: list[torch.Tensor]) -> dict:
    entries = sum(r.numel() for r in reference)
    nonzero = sum(int((r != 0).sum()) for r in reference)
    zeroed = sum(int(((r != 0) & (g == 0)).sum()) for r, g in zip(reference, low))
    overflow = sum(int((~torch.isfinite(g)).sum()) for g in low)
    return {"entries": entries, "nonzero": nonzero, "zeroed": zeroed, "overflow": overflow}


def _check_scale(loss_scale) -> None:
    positive_number(loss_scale, "loss_scale")


def loss_scale_sweep(model: nn.Module, ids: torch.Tensor, loss_scales: Sequence[float],
                     precision: str = "fp16", labels: torch.Tensor | None = None) -> list[dict]:
    """For each loss scale S: how many gradient entries underflow to zero or overflow to inf
    when backward runs in `precision` ("fp16" or "bf16"), against an fp32 reference.

    Each row: `weight_*` counts over all parameter gradients, `activation_*` over the gradients
    of the embedding output, every block's output and the logits; `zeroed` = non-zero in fp32,
    zero in 16 bits; `overflow` = inf or nan; `relative_error` = |g16 / S - g32| / |g32| over the
    weight gradients (nan once anything overflowed). Runs on the CPU; the model is not changed.

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> rows = loss_scale_sweep(m, torch.randint(0, 256, (2, 16)), [1.0, 2.0**30])
    >>> rows[0]["weight_overflow"], rows[1]["weight_overflow"] > 0
    (0, True)
    """
    if precision not in LOW_PRECISIONS:
        raise ValueError(f"precision must be one of {LOW_PRECISIONS}, got {precision!r}")
    if len(loss_scales) == 0:
        raise ValueError("loss_scales must hold at least one loss scale")
    for s in loss_scales:
        _check_scale(s)
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long or ids.dim() != 2:
        raise ValueError("`ids` must be a 2-D LongTensor of token ids (batch, seq)")
    labels = ids if labels is None else labels
    was_training = model.training
    reference_model = copy.deepcopy(model).float().cpu().train()
    ref_w, ref_a, ref_loss = _gradients(reference_model, ids.cpu(), labels.cpu(), 1.0)
    low_model = copy.deepcopy(model).to(device="cpu", dtype=DTYPES[precision]).train()
    del reference_model
    names = list(ref_w)
    ref_norm = torch.cat([ref_w[n].flatten() for n in names]).norm()
    rows = []
    for s in loss_scales:
        low_w, low_a, loss = _gradients(low_model, ids.cpu(), labels.cpu(), float(s))
        w = _count([ref_w[n] for n in names], [low_w[n] for n in names])
        a = _count(ref_a, low_a)
        # unscale in fp32, as GradScaler.unscale_ does on the fp32 master gradients
        diff = torch.cat([(low_w[n].float() / s - ref_w[n]).flatten() for n in names]).norm()
        rows.append({"precision": precision, "loss_scale": float(s), "loss_fp32": ref_loss, "loss": loss,
                     **{f"weight_{k}": v for k, v in w.items()},
                     **{f"activation_{k}": v for k, v in a.items()},
                     "relative_error": float(diff / ref_norm)})
    model.train(was_training)
    return rows


def gradient_underflow(model: nn.Module, ids: torch.Tensor, precision: str = "fp16", loss_scale: float = 1.0,
                       labels: torch.Tensor | None = None) -> dict:
    """One row of `loss_scale_sweep`: zeroed and overflowed gradient entries at one loss scale.

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> r = gradient_underflow(m, torch.randint(0, 256, (2, 16)), "bf16")
    >>> r["weight_overflow"]
    0
    """
    return loss_scale_sweep(model, ids, [loss_scale], precision, labels)[0]


def gradient_magnitudes(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
    """log2 |g| of every non-zero fp32 gradient entry, for a histogram against the formats' ranges
    (the picture of Micikevicius et al., figure 3): {"weights": tensor, "activations": tensor}.

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> sorted(gradient_magnitudes(m, torch.randint(0, 256, (2, 16))))
    ['activations', 'weights']
    """
    reference = copy.deepcopy(model).float().cpu().train()
    w, a, _ = _gradients(reference, ids.cpu(), (ids if labels is None else labels).cpu(), 1.0)

    def log2(tensors):
        g = torch.cat([t.flatten() for t in tensors]).abs()
        return g[g > 0].log2()

    return {"weights": log2(w.values()), "activations": log2(a)}


def precision_sweep(model: nn.Module, ids: torch.Tensor, precisions: Sequence[str] | None = None,
                    repeats: int = 3) -> list[dict]:
    """Memory by category (`memory_report`) and median step time (`time_step`) of one training
    step per precision, on the model's device, each on a fresh copy of `model`. Default
    precisions: fp32 and bf16, plus fp16 on CUDA (timed without the GradScaler, whose cost is a
    few scalar ops). fp16 on the CPU raises `ValueError` (use bf16) before anything runs.

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> rows = precision_sweep(m, torch.randint(0, 256, (2, 16)), ["fp32", "bf16"], repeats=1)
    >>> [r["precision"] for r in rows], rows[0]["weights"] == rows[1]["weights"]
    (['fp32', 'bf16'], True)
    """
    device = next(model.parameters()).device
    if precisions is None:
        precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    if len(precisions) == 0:
        raise ValueError(f"precisions must name at least one of {PRECISIONS}")
    for p in precisions:
        check_precision(p, device)
    rows = []
    for p in precisions:
        fresh = copy.deepcopy(model)
        report = memory_report(fresh, ids, precision=p)
        seconds = time_step(train_step_fn(fresh, ids, precision=p), warmup=1, repeats=repeats)
        rows.append({"precision": p, **report.as_dict(), "parameters": count_parameters(fresh).total,
                     "step_s": seconds, "tokens_per_s": ids.numel() / seconds})
    return rows
