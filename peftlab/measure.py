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

import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch.profiler import record_function

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


# The profiler's categories (torch.profiler._memory_profiler.Category) under this module's names.
AT_PEAK_NAMES = {"PARAMETER": "weights", "GRADIENT": "gradients", "OPTIMIZER_STATE": "optimizer",
                 # the two below: autograd's buffers and backward's intermediates, with checkpointing the
                 # recomputed block's activations and their gradients
                 "ACTIVATION": "activations", "AUTOGRAD_DETAIL": "backward temporaries",
                 "TEMPORARY": "backward temporaries", "INPUT": "inputs and buffers", None: "unattributed"}


@dataclass
class MemoryReport:
    """Bytes of one training step: the accounting (four categories) and, where measured, the peak.

    `total` is the *accounted* total: weights + gradients + optimizer + activations, as if all four
    were live at once. They never are (activations are freed while gradients appear, Adam's state is
    created by the first step), and backward's temporaries are not among them, so `total` is an
    accounting, not a peak. `peak` is measured: the most bytes live at one instant of the step, with
    `at_peak` the categories live at that instant (`peak_source` says where it came from).
    """

    weights: int
    gradients: int
    optimizer: int
    activations: int
    optimizer_step_counters: int
    peak: int | None = None  # measured peak of live bytes during the step
    at_peak: dict[str, int] | None = None  # bytes live at the peak by category (the profiler's timeline)
    peak_source: str | None = None
    peak_phase: str | None = None  # where the peak falls: "forward", "backward" or "optimizer step"

    @property
    def total(self) -> int:
        """The accounted total (see the class docstring): not a peak."""
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def at_peak_attributed(self) -> int | None:
        """Bytes live at the peak that the profiler put in a category (all but "unattributed")."""
        if self.at_peak is None:
            return None
        return sum(v for k, v in self.at_peak.items() if k != "unattributed")  # the optimizer step's
        # temporaries count: they were allocated inside `Optimizer.step`, so their owner is known

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def __str__(self) -> str:
        rows = [(k, getattr(self, k)) for k in ("weights", "gradients", "optimizer", "activations",
                                                 "optimizer_step_counters")]
        rows.append(("accounted total", self.total))
        if self.peak is not None:
            rows.append((f"measured peak ({self.peak_phase})" if self.peak_phase else "measured peak", self.peak))
            rows += [(f"at peak: {k}", v) for k, v in (self.at_peak or {}).items()]
        return "\n".join(f"{k:>32}: {v:>12,d} B  ({v / 2**20:8.2f} MiB)" for k, v in rows)


def _storage_key(t: torch.Tensor) -> tuple:
    s = t.untyped_storage()
    return (t.device, s.data_ptr(), s.nbytes())


def memory_report(model: torch.nn.Module, batch: torch.Tensor, optimizer: torch.optim.Optimizer | None = None,
                  precision: str = "fp32", labels: torch.Tensor | None = None, *, step: str = "first",
                  profile: bool | str = False) -> MemoryReport:
    """Run one training step on `batch` (token ids, (batch, seq)) and count bytes by category.

    Without `optimizer`, a fresh AdamW over the trainable parameters is used. Gradients and
    optimizer state exist only for what trains, so a frozen base costs only its weights.
    `step="later"` first runs one unmeasured step, so Adam's state exists before the measured one
    (a step in the middle of training); `"first"` measures the step that creates it.

    `profile=True` also measures the peak (one profiled step, the same one): on CPU from the
    allocator's own events (`torch.profiler`, `profile_memory=True`): the bytes of model, optimizer and
    batch live before the step plus the highest running sum of what the step allocates and frees; on
    CUDA `torch.cuda.max_memory_allocated`. `at_peak` gives the profiler's memory timeline at its peak
    by category, backward's temporaries and a checkpointed block's recomputation included. Reading the
    timeline costs seconds (the profiler's memory analysis); `profile="peak"` measures the peak and its
    phase only, without `at_peak`, for a fraction of a second, for sweeps. Without a working profiler the
    report is the accounting alone, with a warning saying why.

    >>> from peftlab import load_base
    >>> model = load_base()
    >>> r = memory_report(model, torch.zeros(1, 8, dtype=torch.long))
    >>> (r.weights + r.gradients + r.optimizer) // count_parameters(model).total
    16
    >>> r = memory_report(model, torch.zeros(1, 8, dtype=torch.long), profile=True)
    >>> r.peak_phase, 0.9 < r.at_peak_attributed / r.peak <= 1.0  # 8 tokens: Adam's first step is the top
    ('optimizer step', True)
    """
    if not isinstance(batch, torch.Tensor) or batch.dtype != torch.long or batch.dim() != 2:
        raise ValueError("`batch` must be a 2-D LongTensor of token ids (batch, seq), got "
                         f"{getattr(batch, 'dtype', type(batch).__name__)}")
    if batch.shape[0] < 1 or batch.shape[1] < 2:
        raise ValueError(f"`batch` must hold at least 1 sequence of at least 2 tokens (a next-token loss needs "
                         f"two), got shape {tuple(batch.shape)}")
    context = getattr(getattr(model, "config", None), "max_seq_len", None)
    if context is not None and batch.shape[1] > context:
        raise ValueError(f"`batch` has {batch.shape[1]} tokens per sequence, more than the model's context of "
                         f"max_seq_len={context}")
    if step not in ("first", "later"):
        raise ValueError(f"step must be 'first' (the step that creates the optimizer's state) or 'later', got {step!r}")
    if not isinstance(profile, bool) and profile != "peak":
        raise ValueError(f"profile must be True, False or 'peak', got {profile!r}")
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

    def one_step(hooks: bool) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t) if hooks else _nothing():
            with autocast(precision, device), record_function("peftlab.forward"):
                loss = lm_loss(model(batch), labels)
        with record_function("peftlab.backward"):
            loss.backward()
        optimizer.step()

    model.train()
    if step == "later":
        one_step(hooks=False)
    optimizer.zero_grad(set_to_none=True)
    before = _live_bytes(stored, model, optimizer, batch, labels) if profile else 0
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    measured = _profiled(lambda: one_step(hooks=True), device, categories=profile is True) if profile else None
    if not profile:
        one_step(hooks=True)

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
    report = MemoryReport(weights, gradients, moments, sum(saved.values()), counters)
    if device.type == "cuda":
        torch.cuda.synchronize()
        report.peak, report.peak_source = torch.cuda.max_memory_allocated(device), "torch.cuda.max_memory_allocated"
    if measured is not None:
        allocated_peak, report.at_peak, report.peak_phase = measured
        if device.type != "cuda":
            report.peak = before + allocated_peak
            report.peak_source = "torch.profiler allocator events + bytes live before the step"
    return report


@contextmanager
def _nothing():
    yield


def _live_bytes(weights: list[torch.Tensor], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                *tensors: torch.Tensor) -> int:
    """Bytes of the distinct storages the step starts from: `weights` (`_weight_tensors`) and the
    model's buffers, the optimizer's state and the batch (the gradients were just set to None)."""
    found = [*weights, *model.buffers(), *tensors,
             *(t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor))]
    return sum({_storage_key(t): t.untyped_storage().nbytes() for t in found}.values())


def _profiled(fn: Callable[[], None], device: torch.device,
              categories: bool = True) -> tuple[int, dict[str, int] | None, str] | None:
    """Run `fn` under `torch.profiler` with memory profiling. Return the highest running sum of the
    bytes it allocated (net of frees), the memory timeline's categories at the timeline's own peak and
    the phase the peak falls in ("forward", "backward", "optimizer step"); without `categories` only the
    peak and its phase (no memory timeline, which is the slow part). On any failure of the profiler `fn`
    still runs once, a warning says why, and the result is None."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile
        from torch.profiler._memory_profiler import TensorKey

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        prof = torch_profile(activities=activities, profile_memory=True, record_shapes=categories,
                             with_stack=categories)
        with _quiet_fd2():  # kineto writes "profiler_start" / "profiler_stop" lines straight to fd 2
            prof.__enter__()
    except Exception as error:  # noqa: BLE001 - any failure: the accounting still stands
        warnings.warn(f"memory_report: torch.profiler is unavailable ({error}); the report holds the accounted "
                      "categories only, without a measured peak", RuntimeWarning, stacklevel=3)
        fn()
        return None
    try:
        fn()
    finally:
        with _quiet_fd2():
            prof.__exit__(None, None, None)
    try:
        deltas, phases = [], []
        stack = list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            event = stack.pop()
            stack.extend(event.children)
            if event.tag == _EventType.Allocation:
                if event.extra_fields.device == device:
                    deltas.append((event.start_time_ns, event.extra_fields.alloc_size))
            elif event.tag == _EventType.TorchOp:
                phase = _phase_name(event)
                if phase:
                    phases.append((event.start_time_ns, event.end_time_ns, phase))
        running, highest, highest_at = 0, 0, 0
        for t, size in sorted(deltas):
            running += size
            if running > highest:
                highest, highest_at = running, t

        def phase_at(t: int) -> str:
            return next((name for start, end, name in phases if start <= t <= end), "between phases")

        if not categories:
            return highest, None, phase_at(highest_at) if highest_at else "before the step"

        # The memory timeline replayed event by event, each (tensor, version) under its category; bytes
        # the profiler leaves uncategorized inside the optimizer step are the step's own temporaries.
        memory = prof._memory_profile()
        live: dict[str, int] = dict.fromkeys(dict.fromkeys(AT_PEAK_NAMES.values()), 0)
        live["optimizer step temporaries"] = 0
        named: dict[tuple, str] = {}
        top, top_at, top_phase = -1, dict(live), "between phases"
        for t, action, (key, version), size in memory.timeline:
            if key.device != device:
                continue

            def name(v: int) -> str:
                if (key, v) not in named:
                    category = memory._categories.get(key, v) if isinstance(key, TensorKey) else None
                    label = AT_PEAK_NAMES[category.name if category is not None else None]
                    if label == "unattributed" and t > 0 and phase_at(t) == "optimizer step":
                        label = "optimizer step temporaries"
                    named[(key, v)] = label
                return named[(key, v)]

            if action.name in ("PREEXISTING", "CREATE"):
                live[name(version)] += size
            elif action.name == "INCREMENT_VERSION":
                live[name(version)] -= size
                live[name(version + 1)] += size
            elif action.name == "DESTROY":
                live[name(version)] -= size
            total = sum(live.values())
            if total > top:
                top, top_at, top_phase = total, dict(live), phase_at(t) if t > 0 else "before the step"
        return highest, top_at, top_phase
    except Exception as error:  # noqa: BLE001
        warnings.warn(f"memory_report: the profiler's record could not be read ({error}); the report holds the "
                      "accounted categories only", RuntimeWarning, stacklevel=3)
        return None


@contextmanager
def _quiet_fd2():
    """Send file descriptor 2 to /dev/null inside the block (C-level writes included), then restore it."""
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2 to redirect
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _phase_name(event) -> str | None:
    try:
        name = event.name
    except UnicodeDecodeError:  # some recorded names are not valid UTF-8
        return None
    if name == "peftlab.forward":
        return "forward"
    if name == "peftlab.backward":
        return "backward"
    return "optimizer step" if name.startswith("Optimizer.step#") else None


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


class Ratio(NamedTuple):
    """Per-round time ratios of two candidates timed in alternation: the median with its spread."""

    median: float
    q1: float  # first and third quartile of the per-round ratios (the interquartile range)
    q3: float
    low: float  # the smallest and the largest per-round ratio
    high: float
    rounds: int

    def __str__(self) -> str:
        return (f"{self.median:.2f} (IQR {self.q1:.2f}-{self.q3:.2f}, range {self.low:.2f}-{self.high:.2f}, "
                f"{self.rounds} rounds)")

    def below(self, value: float) -> bool:
        """The whole interquartile range lies below `value`."""
        return self.q3 < value

    def above(self, value: float) -> bool:
        """The whole interquartile range lies above `value`."""
        return self.q1 > value

    def within(self, low: float, high: float) -> bool:
        """The whole interquartile range lies inside [low, high]."""
        return low <= self.q1 and self.q3 <= high

    def verdict(self, claim: str, margin: float, center: float = 1.0) -> str:
        """A timing claim judged on the spread the cell prints, with a margin declared before the run:
        "below" (the ratio is under 1 + margin; a negative margin claims a speed-up, -0.2 = "at least
        20% faster"), "above" (over 1 + margin) or "equivalent" (within 1 ± margin, margin >= 0);
        `center` replaces the 1 (a claim about a ratio other than parity, such as "+33%": 1.33). "holds" when the whole interquartile range agrees, "does not hold" when the whole
        range disagrees, otherwise "inconclusive".

        >>> Ratio(1.01, 1.00, 1.02, 0.97, 1.05, 15).verdict("equivalent", 0.03)
        'holds'
        >>> Ratio(1.05, 1.04, 1.07, 1.00, 1.09, 15).verdict("below", 0.03)
        'does not hold'
        """
        if claim not in ("below", "above", "equivalent"):
            raise ValueError(f"claim must be 'below', 'above' or 'equivalent', got {claim!r}")
        if not (isinstance(margin, (int, float)) and margin > -1) or (claim == "equivalent" and margin < 0):
            raise ValueError(f"margin must be a number > -1 (>= 0 for 'equivalent'), got {margin!r}")
        low, high = center - margin, center + margin
        if claim == "equivalent":
            if self.within(low, high):
                return "holds"
            return "does not hold" if self.q1 > high or self.q3 < low else "inconclusive"
        holds, fails = (self.below(high), self.q1 >= high) if claim == "below" else (self.above(high), self.q3 <= high)
        return "holds" if holds else "does not hold" if fails else "inconclusive"


def ratio_spread(samples: dict[str, list[float]], numerator: str, denominator: str) -> Ratio:
    """The per-round ratios numerator / denominator of `interleaved_samples`, summarized: median,
    interquartile range, min and max. Report this, never an absolute time: on a shared machine a slow
    spell moves both candidates of a round alike, and the spread shows what is left.

    >>> r = ratio_spread({"a": [1.0, 4.0, 3.0, 2.0], "b": [2.0, 8.0, 2.0, 2.0]}, "a", "b")
    >>> r.median, r.low, r.high, r.rounds
    (0.75, 0.5, 1.5, 4)
    >>> print(r)
    0.75 (IQR 0.50-1.12, range 0.50-1.50, 4 rounds)
    """
    paired_ratio(samples, numerator, denominator)  # the same checks
    ratios = sorted(a / b for a, b in zip(samples[numerator], samples[denominator]))
    if len(ratios) == 1:
        q1 = q3 = ratios[0]
    else:
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return Ratio(statistics.median(ratios), q1, q3, ratios[0], ratios[-1], len(ratios))


def time_ratios(fns: dict[str, Callable[[], object]], reference: str, rounds: int = 15,
                warmup: int = 2) -> dict[str, Ratio]:
    """Each candidate's time against `reference`, timed in alternation in this process: the one timing
    protocol of peftlab's notebooks and benchmarks (`interleaved_samples`, then `ratio_spread`).

    >>> r = time_ratios({"base": lambda: sum(range(2000)), "twice": lambda: sum(range(4000))}, "base", rounds=5)
    >>> sorted(r), r["base"].median
    (['base', 'twice'], 1.0)
    """
    if reference not in fns:
        raise ValueError(f"reference must be one of the candidates {sorted(fns)}, got {reference!r}")
    samples = interleaved_samples(fns, rounds, warmup)
    return {name: ratio_spread(samples, name, reference) for name in fns}


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
