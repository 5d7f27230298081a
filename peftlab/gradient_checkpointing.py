"""Gradient checkpointing: keep each block's input, recompute the rest in the backward pass.

Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost" (arXiv:1604.06174). Backward
needs the activations of the forward pass. Storing them all costs memory O(n) in the depth n.
Storing only the input of each segment and recomputing a segment's activations when its backward
comes costs one extra forward pass; with segments of sqrt(n) layers memory is O(sqrt(n)) (their
1,000-layer ResNet: 48 GB -> 7 GB for about 30% more time).

peftlab checkpoints per transformer block (`Block.checkpoint`, `Transformer.set_gradient_checkpointing`,
`train(..., gradient_checkpointing=True)`), as Hugging Face does: the n block inputs
(batch x seq x d_model each) stay, plus one block's activations while it is recomputed. A block's
input is a small fraction of what the block saves (attention and MLP intermediates), so this
already removes most of the activation memory, though it is still O(n).

Compute: a training step is about one forward (2N FLOPs per token for N parameters) plus a
backward of twice that (4N): 6N. Recomputing the forward adds 2N: 8N, +33%. Measured slowdowns
are often lower (the often-quoted "20%" is from the README of Salimans and Bulatov's
gradient-checkpointing package) because the optimizer step, the head and the loss are not
recomputed, and higher where the recomputed part is memory-bound.

Pitfall: PyTorch's older *reentrant* checkpoint only propagates gradients if one of the block's
inputs requires grad. With a frozen embedding (LoRA, QLoRA) no input does, so no parameter inside
the block gets a gradient and backward fails with "element 0 of tensors does not require grad".
peftlab's blocks use the non-reentrant variant (`use_reentrant=False`), which has no such
condition; `reentrant_checkpointing(model)` switches the old variant on to show the failure, and
`enable_input_require_grads` is the usual repair for it (Hugging Face's method of that name).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .measure import count_parameters, memory_report, time_ratios, train_step_fn
from .model import ModelConfig, Transformer
from .train import check_precision

FLOPS_PER_TOKEN = {"without": 6, "with": 8}  # x N parameters: forward 2N + backward 4N (+ forward 2N again)
THEORY_TIME_RATIO = FLOPS_PER_TOKEN["with"] / FLOPS_PER_TOKEN["without"]


@contextmanager
def reentrant_checkpointing(model: Transformer) -> Iterator[None]:
    """Inside this block, the model's checkpointed blocks use PyTorch's reentrant checkpoint
    (`use_reentrant=True`, the old default) instead of peftlab's non-reentrant one.

    Only for showing the frozen-embedding failure; peftlab's blocks otherwise always use the
    non-reentrant variant.

    >>> from peftlab import ModelConfig, Transformer, lora
    >>> m = lora.add(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), r=2)
    >>> m.set_gradient_checkpointing(True)
    >>> with reentrant_checkpointing(m):
    ...     m(torch.zeros(1, 4, dtype=torch.long)).requires_grad  # nothing to backpropagate
    False
    """
    blocks = [m for m in model.modules() if hasattr(m, "use_reentrant")]
    for block in blocks:
        block.use_reentrant = True
    try:
        yield
    finally:
        for block in blocks:
            block.use_reentrant = False


def enable_input_require_grads(model: Transformer) -> torch.utils.hooks.RemovableHandle:
    """Make the embedding's output require grad, so the reentrant checkpoint sees an input that
    requires grad even when the embedding is frozen. Returns the hook's handle (`.remove()`).

    >>> from peftlab import ModelConfig, Transformer
    >>> m = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)).requires_grad_(False)
    >>> handle = enable_input_require_grads(m)
    >>> m.embed_tokens(torch.zeros(1, 2, dtype=torch.long)).requires_grad
    True
    """
    return model.embed_tokens.register_forward_hook(lambda _m, _inputs, out: out.requires_grad_(True))


def _checkpointed_copy(model: nn.Module, enabled: bool, blocks: Sequence[int] | None = None) -> nn.Module:
    fresh = copy.deepcopy(model)
    fresh.set_gradient_checkpointing(enabled, None if blocks is None else list(blocks))
    return fresh


def measure_checkpointing(model: Transformer, ids: torch.Tensor, precision: str = "fp32",
                          repeats: int = 7, timed: bool = True, peaks: bool = False) -> dict:
    """Activation bytes and step time of one training step, without and with checkpointing
    every block, each on a fresh copy of `model` (which is not changed).

    Keys: `activations_off`, `activations_on` (bytes autograd saved: `memory_report`),
    `activations_recompute` (every block but the last checkpointed: what is alive while one
    block is recomputed in the backward pass, i.e. the stored inputs plus one block's
    activations), `total_off`, `total_on` (accounted totals), with `peaks` `peak_off`, `peak_on`
    (measured peaks of a step after the first: `memory_report(..., profile=True)`, the recompute
    included), and with
    `timed` `time_ratio`: the step time with / without, timed in alternation (`time_ratios`, a
    `Ratio` with its spread over `repeats` rounds).

    >>> m = Transformer(ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64))
    >>> r = measure_checkpointing(m, torch.randint(0, 256, (2, 16)), timed=False)
    >>> r["activations_on"] < r["activations_recompute"] < r["activations_off"]
    True
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a peftlab Transformer, got {type(model).__name__}")
    check_precision(precision, next(model.parameters()).device)
    n = len(model.layers)
    off, on = _checkpointed_copy(model, False), _checkpointed_copy(model, True)
    r_off = memory_report(off, ids, precision=precision)
    r_on = memory_report(on, ids, precision=precision)
    recompute = memory_report(_checkpointed_copy(model, True, range(n - 1)), ids, precision=precision)
    row = {"depth": n, "parameters": count_parameters(model).total, "tokens": ids.numel(),
           "activations_off": r_off.activations, "activations_on": r_on.activations,
           "activations_recompute": recompute.activations, "total_off": r_off.total, "total_on": r_on.total}
    if peaks:
        for key, enabled in (("peak_off", False), ("peak_on", True)):
            row[key] = memory_report(_checkpointed_copy(model, enabled), ids, precision=precision, step="later",
                                     profile="peak").peak
    if timed:
        steps = {"off": train_step_fn(off, ids, precision=precision), "on": train_step_fn(on, ids, precision=precision)}
        row["time_ratio"] = time_ratios(steps, "off", rounds=repeats, warmup=1)["on"]
    return row


def segment_sweep(model: Transformer, ids: torch.Tensor, segments: Sequence[int]) -> list[dict]:
    """Chen et al.'s schedule on `model`: checkpoint segments of k blocks for each k in `segments`
    (`set_gradient_checkpointing(segment=k)`), and measure the peak of a training step after the first
    (`memory_report(..., profile="peak")`); k = 0 is no checkpointing. A fresh copy per k; `model` is
    not changed.

    With n blocks, each keeping S bytes for backward and passing on an input of I bytes, the peak's
    activation part is about (n / k) I (the kept segment inputs) + k S (one segment recomputed):
    smallest at k = sqrt(n I / S), which is Chen's sqrt(n) only when a block keeps no more than it
    passes on (S = I). Each row: `segment`, `peak`, `kept` (bytes autograd saved in the forward pass).

    >>> m = Transformer(ModelConfig(d_model=32, n_layers=4, n_heads=2, d_ff=64))
    >>> [r["segment"] for r in segment_sweep(m, torch.randint(0, 256, (2, 16)), [0, 1, 2, 4])]
    [0, 1, 2, 4]
    """
    if not isinstance(model, Transformer):
        raise TypeError(f"model must be a peftlab Transformer, got {type(model).__name__}")
    n = len(model.layers)
    if len(segments) == 0 or any(isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n
                                 for k in segments):
        raise ValueError(f"segments must be a non-empty list of ints from 0 (off) to {n} (the blocks), got {segments!r}")
    rows = []
    for k in segments:
        fresh = copy.deepcopy(model)
        fresh.set_gradient_checkpointing(k > 0, segment=max(k, 1))
        r = memory_report(fresh, ids, step="later", profile="peak")
        rows.append({"segment": k, "peak": r.peak, "kept": r.activations})
    return rows


def checkpointing_sweep(depths: Sequence[int], d_model: int = 256, n_heads: int = 8, d_ff: int = 688,
                        batch_size: int = 4, seq_len: int = 128, precision: str = "fp32", device: str = "cpu",
                        repeats: int = 7, timed: bool = True, seed: int = 0, peaks: bool = False) -> list[dict]:
    """`measure_checkpointing` for random-init models of the given depths (the base model's width
    by default) on one fixed random batch: how activation memory and step time grow with depth.

    >>> rows = checkpointing_sweep([1, 2], d_model=32, n_heads=2, d_ff=64, seq_len=16, timed=False)
    >>> [r["depth"] for r in rows]
    [1, 2]
    """
    if len(depths) == 0 or any(not isinstance(d, int) or d < 1 for d in depths):
        raise ValueError(f"depths must be a non-empty list of positive ints, got {depths!r}")
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("repeats", repeats)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    check_precision(precision, torch.device(device))
    ids = torch.randint(0, 256, (batch_size, seq_len), generator=torch.Generator().manual_seed(seed))
    rows = []
    for depth in depths:
        torch.manual_seed(seed)
        cfg = ModelConfig(d_model=d_model, n_heads=n_heads, d_ff=d_ff, n_layers=depth, max_seq_len=max(seq_len, 256))
        model = Transformer(cfg).to(device)
        rows.append(measure_checkpointing(model, ids, precision, repeats, timed, peaks))
    return rows
