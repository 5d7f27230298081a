"""Exact memory accounting and honest timing.

`memory_report` runs one real training step and counts bytes from the tensors themselves:

* weights: every parameter's storage, and for 4-bit layers (QLoRA, `peftlab.qlora`) the packed
  codes and every quantization constant (absmax, code table, nested absmax and code table, offset),
  wherever the layer keeps them (buffers, or bitsandbytes' `weight.quant_state`);
* gradients: the `.grad` of every trainable parameter after backward;
* optimizer: the optimizer's per-parameter state tensors (Adam's two moments); the 0-dim step
  counters (one per parameter tensor, not per parameter) are reported apart;
* activations: the tensors autograd saved for the backward pass, captured with
  `torch.autograd.graph.saved_tensors_hooks`, each storage counted once and parameters
  excluded (a weight saved for backward is already counted as a weight).

For full fine-tuning in fp32 with AdamW this gives weights + gradients + optimizer =
4 + 4 + 8 = 16 bytes per parameter, the figure of the ZeRO paper (Rajbhandari et al. 2019).
On CUDA the report also holds `torch.cuda.max_memory_allocated` during the step and its
difference from the accounted total (allocator blocks, workspaces, temporaries freed in-step).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch

from .checks import int_at_least
from .quant import quantized_tensors
from .train import autocast, lm_loss


class ParameterCount(NamedTuple):
    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / self.total


def count_parameters(model: torch.nn.Module) -> ParameterCount:
    """Trainable and total parameters (shared tensors counted once).

    >>> from peftlab import load_base
    >>> count_parameters(load_base())
    ParameterCount(trainable=3297024, total=3297024)
    """
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return ParameterCount(trainable, total)


@dataclass
class MemoryReport:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    optimizer_step_counters: int
    peak_allocated: int | None = None  # CUDA only: torch.cuda.max_memory_allocated during the step
    peak_minus_accounted: int | None = None  # CUDA only: peak_allocated - total

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def __str__(self) -> str:
        rows = [(k, v) for k, v in self.as_dict().items() if v is not None]
        return "\n".join(f"{k:>24}: {v:>12,d} B  ({v / 2**20:8.2f} MiB)" for k, v in rows)


def _storage_key(t: torch.Tensor) -> tuple:
    s = t.untyped_storage()
    return (t.device, s.data_ptr(), s.nbytes())


def memory_report(model: torch.nn.Module, batch: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                  precision: str = "fp32", labels: torch.Tensor | None = None) -> MemoryReport:
    """Run one training step on `batch` (token ids, (batch, seq)) and count bytes by category.

    Without `optimizer`, a fresh AdamW over the trainable parameters is used. Gradients and
    optimizer state exist only for what trains, so a frozen base costs only its weights.

    >>> from peftlab import load_base
    >>> model = load_base()
    >>> r = memory_report(model, torch.zeros(1, 8, dtype=torch.long))
    >>> (r.weights + r.gradients + r.optimizer) // count_parameters(model).total
    16
    """
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.long or batch.dim() != 2:
        raise ValueError("`batch` must be a 2-D LongTensor of token ids (batch, seq), got "
                         f"{getattr(batch, 'dtype', type(batch).__name__)}")
    device = next(model.parameters()).device
    batch = batch.to(device)
    labels = batch if labels is None else labels.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizer or torch.optim.AdamW(params, lr=1e-3)
    stored = _weight_tensors(model)
    param_storages = {_storage_key(t) for t in stored}
    saved: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in param_storages:
            saved[key] = t.untyped_storage().nbytes()
        return t

    model.train()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with autocast(precision, device):
            loss = lm_loss(model(batch), labels)
    loss.backward()
    optimizer.step()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None

    weights = sum(_storage_nbytes(t) for t in stored)
    gradients = sum(_storage_nbytes(p.grad) for p in _unique(model.parameters()) if p.grad is not None)
    moments, counters = 0, 0
    for state in optimizer.state.values():
        for t in state.values():
            if isinstance(t, torch.Tensor):
                if t.dim() == 0:
                    counters += t.numel() * t.element_size()
                else:
                    moments += t.numel() * t.element_size()
    optimizer.zero_grad(set_to_none=False)
    report = MemoryReport(weights, gradients, moments, sum(saved.values()), counters, peak)
    if peak is not None:
        report.peak_minus_accounted = peak - report.total
    return report


def _weight_tensors(model: torch.nn.Module) -> list[torch.Tensor]:
    """Parameters and the 4-bit layers' stored tensors (a bitsandbytes weight is both), each once."""
    quantized = (t for m in model.modules() for t in quantized_tensors(m).values())
    return list(_unique([*model.parameters(), *quantized]))


def _unique(params):
    seen = set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            yield p


def _storage_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def time_step(fn: Callable[[], object], warmup: int = 2, repeats: int = 5) -> float:
    """Median wall time of `fn()` in seconds, after `warmup` untimed calls; synchronizes CUDA
    around every call so queued kernels are counted.
    """
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def train_step_fn(model: torch.nn.Module, batch: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                  precision: str = "fp32") -> Callable[[], None]:
    """A closure doing one full training step (forward, backward, optimizer), for `time_step`."""
    device = next(model.parameters()).device
    batch = batch.to(device)
    optimizer = optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()

    def step() -> None:
        with autocast(precision, device):
            loss = lm_loss(model(batch), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# --- comparing times: interleaved rounds, paired ratios --------------------------------------

def interleaved_samples(fns: dict[str, Callable[[], object]], rounds: int,
                        warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of every timed call of each function, measured in alternation.

    Round i calls every function once, in order on even rounds and in reverse on odd ones (A B, B A,
    ...), each call timed by `time_step` (CUDA synchronized around it). Entry i of every list
    belongs to round i, so two candidates can be compared round by round (`paired_ratio`).

    >>> s = interleaved_samples({"a": lambda: None, "b": lambda: sum(range(1000))}, rounds=3)
    >>> [len(v) for v in s.values()]
    [3, 3]
    """
    if not isinstance(fns, dict) or not fns or not all(callable(f) for f in fns.values()):
        raise TypeError(f"fns must be a non-empty dict of name -> callable, got {fns!r}")
    int_at_least(rounds, "rounds", 1)
    int_at_least(warmup, "warmup", 0)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names, samples = list(fns), {name: [] for name in fns}
    for i in range(rounds):
        for name in names if i % 2 == 0 else reversed(names):
            samples[name].append(time_step(fns[name], warmup=0, repeats=1))
    return samples


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, measured in alternation (`interleaved_samples`).

    >>> sorted(interleaved_times({"a": lambda: None, "b": lambda: None}, rounds=3))
    ['a', 'b']
    """
    return {name: statistics.median(ts) for name, ts in interleaved_samples(fns, rounds, warmup).items()}


def paired_ratio(samples: dict[str, list[float]], numerator: str, denominator: str) -> float:
    """Median over rounds of numerator / denominator, each round's two calls timed side by side: a
    slow spell of the machine inflates both and cancels, where a ratio of two medians keeps it.

    >>> paired_ratio({"a": [1.0, 4.0, 3.0], "b": [2.0, 8.0, 2.0]}, "a", "b")
    0.5
    """
    for name in (numerator, denominator):
        if name not in samples:
            raise ValueError(f"{name!r} is not among the measured candidates {sorted(samples)}")
    if len(samples[numerator]) != len(samples[denominator]) or not samples[numerator]:
        raise ValueError(f"{numerator!r} and {denominator!r} need the same, non-zero number of rounds, got "
                         f"{len(samples[numerator])} and {len(samples[denominator])}")
    return statistics.median(a / b for a, b in zip(samples[numerator], samples[denominator]))


def forward_fn(model: torch.nn.Module, batch: torch.Tensor) -> Callable[[], None]:
    """A closure running one inference forward pass of `batch` (eval mode, no autograd graph)."""
    model.eval()
    batch = batch.to(next(model.parameters()).device)

    def forward() -> None:
        with torch.no_grad():
            model(batch)

    return forward


def mib(n_bytes: int) -> str:
    """Bytes as mebibytes, for tables.

    >>> mib(3 * 2**20)
    '3.00 MiB'
    """
    return f"{n_bytes / 2**20:.2f} MiB"
