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
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from .checks import positive_int, positive_number
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


# --- what underflow costs in training, and why master weights exist --------------------------

def _round_gradients(model: nn.Module, dtype: torch.dtype) -> list:
    """Hooks that round every gradient to `dtype` where a 16-bit backward would hold it: the gradient
    flowing out of each leaf module (its grad_output) and each weight gradient. Returns the handles."""
    def rounding(g):
        return None if g is None else g.to(dtype).to(g.dtype)

    handles = []
    for module in model.modules():
        if not list(module.children()):
            handles.append(module.register_full_backward_pre_hook(
                lambda _m, grad_output: tuple(rounding(g) for g in grad_output)))
    handles += [p.register_hook(rounding) for p in model.parameters() if p.requires_grad]
    return handles


def simulated_16bit_gradients(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, loss_scale: float = 1.0,
                              precision: str = "fp16") -> dict[str, torch.Tensor]:
    """Weight gradients (by name, fp32, unscaled) of one backward pass in which every gradient is
    rounded to `precision` ("fp16" or "bf16") at each module boundary and at each weight, the loss
    multiplied by `loss_scale` first: a CPU stand-in for a 16-bit backward that runs at fp32 speed.

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> ids = torch.randint(0, 256, (2, 8))
    >>> g = simulated_16bit_gradients(m, ids, ids, loss_scale=2.0**30)
    >>> bool(torch.isfinite(g["lm_head.weight"]).all())  # past fp16's max of 65,504: inf, then nan
    False
    """
    if precision not in LOW_PRECISIONS:
        raise ValueError(f"precision must be one of {LOW_PRECISIONS}, got {precision!r}")
    _check_scale(loss_scale)
    handles = _round_gradients(model, DTYPES[precision])
    try:
        model.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # the embedding's input (token ids) needs no gradient: expected
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            (lm_loss(model(ids), labels) * loss_scale).backward()
    finally:
        for h in handles:
            h.remove()
    grads = {n: p.grad.detach() / loss_scale for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return grads


def gradient_error_by_layer(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, loss_scale: float = 1.0,
                            precision: str = "fp16") -> dict[str, float]:
    """|g16 - g32| / |g32| of the simulated 16-bit weight gradients, by kind of layer (the last part
    of each parameter's name: q_proj, down_proj, embed_tokens, ...), against an fp32 backward."""
    reference = copy.deepcopy(model)
    reference.zero_grad(set_to_none=True)
    lm_loss(reference(ids), labels).backward()
    exact = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    low = simulated_16bit_gradients(model, ids, labels, loss_scale, precision)
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for name, g in exact.items():
        kind = name.split(".")[-2] if name.endswith(".weight") else name
        num[kind] = num.get(kind, 0.0) + float((low[name] - g).pow(2).sum())
        den[kind] = den.get(kind, 0.0) + float(g.pow(2).sum())
    return {k: math.sqrt(num[k] / den[k]) if den[k] > 0 else float("nan") for k in num}


def train_with_16bit_gradients(model: nn.Module, batches, steps: int, lr: float = 1e-4, loss_scale: float = 1.0,
                               precision: str = "fp16") -> dict:
    """Train `model` in place with fp32 master weights and AdamW, its gradients from
    `simulated_16bit_gradients`; a step whose gradients hold inf or nan is skipped, as GradScaler
    skips it (the scale stays fixed here). `batches`: an iterator of (ids, labels).
    Returns `loss` (per step, fp32, before the update) and `skipped` (steps)."""
    positive_int(steps, "steps")
    positive_number(lr, "lr")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    losses, skipped = [], 0
    model.train()
    for _ in range(steps):
        ids, labels = next(batches)
        with torch.no_grad():
            losses.append(float(lm_loss(model(ids), labels)))
        grads = simulated_16bit_gradients(model, ids, labels, loss_scale, precision)
        if not all(torch.isfinite(g).all() for g in grads.values()):
            skipped += 1
            continue
        for name, p in model.named_parameters():
            if name in grads:
                p.grad = grads[name]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"loss": losses, "skipped": skipped}


def lost_updates(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, lr: float = 1e-4,
                 dtype: str = "bf16") -> dict:
    """One AdamW step applied to weights stored in `dtype` against the same step on fp32 weights:
    the share of weight entries that the fp32 step changes and the `dtype` step leaves exactly as they
    were (their update is below half the format's spacing at that weight), and the share of the update's
    norm that is lost. Why master weights are fp32: in bf16, 1 + 1e-3 rounds to 1.

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> r = lost_updates(m, torch.randint(0, 256, (2, 8)), torch.randint(0, 256, (2, 8)), lr=1e-5)
    >>> r["unchanged_share"] > 0.5
    True
    """
    if dtype not in LOW_PRECISIONS:
        raise ValueError(f"dtype must be one of {LOW_PRECISIONS}, got {dtype!r}")
    positive_number(lr, "lr")
    fp32 = copy.deepcopy(model).float()
    fp32.zero_grad(set_to_none=True)
    lm_loss(fp32(ids), labels).backward()
    grads = {n: p.grad.clone() for n, p in fp32.named_parameters()}
    start = {n: p.detach().clone() for n, p in fp32.named_parameters()}
    torch.optim.AdamW(fp32.parameters(), lr=lr).step()
    low = {n: start[n].to(DTYPES[dtype]) for n in start}  # the weights as a pure 16-bit run holds them
    low_params = [nn.Parameter(w.clone()) for w in low.values()]
    for p, n in zip(low_params, low):
        p.grad = grads[n].to(DTYPES[dtype])
    torch.optim.AdamW(low_params, lr=lr).step()
    changed = unchanged = 0
    lost, total = 0.0, 0.0
    for p, n in zip(low_params, low):
        update32 = fp32.get_parameter(n).detach() - start[n]
        update16 = p.detach().float() - low[n].float()
        moved = update32 != 0
        changed += int(moved.sum())
        unchanged += int((moved & (update16 == 0)).sum())
        lost += float((update32 - update16).pow(2).sum())
        total += float(update32.pow(2).sum())
    return {"unchanged_share": unchanged / changed, "update_error": math.sqrt(lost / total), "lr": lr}


def train_with_16bit_weights(model: nn.Module, batches, steps: int, lr: float = 1e-4, dtype: str = "bf16") -> dict:
    """Train `model` in place with AdamW (no weight decay, gradients clipped to norm 1, as `train`
    does) as if its weights and Adam's moments were stored in `dtype` (no fp32 master copy): after
    every step each weight and moment is rounded to `dtype`; "fp32" rounds nothing, the reference run
    of the same code. Forward and backward run in fp32, so the only difference is where the update is
    kept.
    Returns `loss` per step (before the update) and `unchanged_share` per step (entries the step left
    exactly as they were after rounding, of all weight entries)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    positive_int(steps, "steps")
    positive_number(lr, "lr")
    low = DTYPES[dtype]
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in params:
            p.copy_(p.to(low).float())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    losses, unchanged = [], []
    model.train()
    for _ in range(steps):
        ids, labels = next(batches)
        loss = lm_loss(model(ids), labels)
        losses.append(loss.item())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        before = [p.detach().clone() for p in params]
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for p in params:
                p.copy_(p.to(low).float())
            for state in optimizer.state.values():
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key].copy_(state[key].to(low).float())
        same = sum(int((p == b).sum()) for p, b in zip(params, before))
        unchanged.append(same / sum(p.numel() for p in params))
    return {"loss": losses, "unchanged_share": unchanged}
