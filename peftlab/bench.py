"""Benchmarks: one run prints one table of ratios, every number measured in that run.

    python -m peftlab.bench lora                  # LoRA vs full fine-tuning, vs Hugging Face PEFT, inference
    python -m peftlab.bench lora --rounds 30      # more repeats on a noisy machine
    python -m peftlab.bench lora --no-peft        # skip the PEFT rows
    python -m peftlab.bench memory                # bytes and step time of every method / full fine-tuning,
                                                  # and each method's measured peak against its categories

A subcommand builds a list of `Row`s (a ratio, what it divides, and an optional limit that makes it
PASS or FAIL) and `format_table` prints them. Times come from `interleaved_samples`, which alternates
the candidates inside every round (A B C, then C B A): drift on a shared machine (another job
starting, the clock changing) then falls on all candidates alike instead of on whichever ran last. A
time ratio is the median of the per-round ratios (`paired_ratio`), so a slow spell cancels out.
Adding a subcommand means one `<name>_rows` function and one parser
in `build_parser`.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import platform
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from . import lora
from . import methods
from .measure import (count_parameters, forward_fn, interleaved_samples, memory_report, mib, paired_ratio,
                      train_step_fn)

TARGETS = ("q_proj", "v_proj")  # the LoRA paper's choice for GPT-3 (Hu et al. 2021, section 7.1)
RANK, ALPHA = 8, 16


@dataclass(frozen=True)
class Row:
    """One line of a benchmark table: `numerator / denominator = ratio`, PASS when ratio <= limit."""

    quantity: str
    numerator: str  # the measured values, already formatted with their unit
    denominator: str
    ratio: float
    limit: float | None = None  # None: reported, not judged

    @property
    def target(self) -> str:
        return "" if self.limit is None else f"<= {self.limit:g}"

    @property
    def verdict(self) -> str:
        if self.limit is None:
            return ""
        return "PASS" if self.ratio <= self.limit else "FAIL"


def ratio_row(quantity: str, numerator: float, denominator: float, unit: Callable[[float], str],
              limit: float | None = None) -> Row:
    """The Row for numerator / denominator, both shown with `unit` (a formatter such as `ms`).

    >>> r = ratio_row("step time: LoRA / full", 0.06, 0.1, ms, limit=0.8)
    >>> (r.numerator, r.denominator, round(r.ratio, 3), r.verdict)
    ('60.0 ms', '100.0 ms', 0.6, 'PASS')
    """
    if not denominator > 0:
        raise ValueError(f"denominator must be > 0 for the ratio {quantity!r}, got {denominator!r}")
    if limit is not None and not limit > 0:
        raise ValueError(f"limit must be a positive number or None, got {limit!r}")
    return Row(quantity, unit(numerator), unit(denominator), numerator / denominator, limit)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def count(n: float) -> str:
    return f"{int(n):,}"


def format_ratio(ratio: float) -> str:
    # tiny ratios (parameter counts) read better as "1/N"
    return f"{ratio:.4f} (1/{1 / ratio:,.0f})" if 0 < ratio < 0.1 else f"{ratio:.3f}"


def format_table(rows: list[Row], title: str = "") -> str:
    """A plain-text table with one line per Row, and a PASS/FAIL summary.

    >>> print(format_table([ratio_row("a / b", 1.0, 2.0, count, limit=1.0)]))
    quantity | measured | reference | ratio | target | result
    -------- | -------- | --------- | ----- | ------ | ------
    a / b    | 1        | 2         | 0.500 | <= 1   | PASS
    1 of 1 targets met
    """
    headers = ["quantity", "measured", "reference", "ratio", "target", "result"]
    cells = [[r.quantity, r.numerator, r.denominator, format_ratio(r.ratio), r.target, r.verdict] for r in rows]
    lines = _aligned(headers, cells, title)
    judged = [r for r in rows if r.limit is not None]
    lines.append(f"{sum(r.verdict == 'PASS' for r in judged)} of {len(judged)} targets met")
    return "\n".join(lines)


def _aligned(headers: list[str], cells: list[list[str]], title: str = "") -> list[str]:
    """The title (if any), the header, a rule and one line per row, columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *cells)]
    lines = [title] if title else []
    for line in [headers, ["-" * w for w in widths], *cells]:
        lines.append(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip())
    return lines


def timing_row(quantity: str, samples: dict[str, list[float]], numerator: str, denominator: str,
               limit: float | None = None) -> Row:
    """The Row for two timed candidates: their median times, and the paired ratio as the ratio.

    >>> timing_row("a / b", {"a": [0.01, 0.04, 0.03], "b": [0.02, 0.08, 0.02]}, "a", "b").ratio
    0.5
    """
    ratio = paired_ratio(samples, numerator, denominator)
    row = ratio_row(quantity, statistics.median(samples[numerator]), statistics.median(samples[denominator]),
                    ms, limit)
    return replace(row, ratio=ratio)


class LogitsOnly(nn.Module):
    """A transformers causal LM seen as `ids -> logits`, the interface of peftlab's `Transformer`,
    so that `train_step_fn` and `memory_report` measure it the same way."""

    def __init__(self, hf_model: nn.Module):
        super().__init__()
        self.hf_model = hf_model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.hf_model(ids).logits


def peft_available() -> bool:
    return importlib.util.find_spec("peft") is not None and importlib.util.find_spec("transformers") is not None


# --- lora --------------------------------------------------------------------------------------

def lora_rows(base: nn.Module, batch: torch.Tensor, rounds: int = 15, warmup: int = 2,
              peft: bool | None = None) -> list[Row]:
    """LoRA (r=8, alpha=16) against full fine-tuning, against Hugging Face PEFT, and at inference.

    Rows, each measured here: trainable parameters (q,v and all-linear / full); training step time
    on `base` (LoRA / full, target <= 0.8); with PEFT (default: when installed) the step time and
    memory of peftlab's LoRA and of PEFT's on the same `transformers` model (`peftlab.hf.to_hf`),
    target <= 1.0; inference latency of a forward pass of `batch`, merged / base (target <= 1.02)
    and unmerged / base. `base` is copied, never changed.

    >>> from peftlab import ModelConfig, Transformer
    >>> rows = lora_rows(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)),
    ...                  torch.zeros(2, 8, dtype=torch.long), rounds=1, warmup=0, peft=False)
    >>> [r.quantity for r in rows][0]
    'trainable parameters: LoRA r=8 q,v / full'
    """
    if peft is None:
        peft = peft_available()
    elif peft and not peft_available():
        raise ValueError("peft=True needs `peft` and `transformers` installed (pip install peftlab[hf] peft)")
    full = copy.deepcopy(base)
    qv = methods.prepare(base, "lora", r=RANK, alpha=ALPHA, targets=TARGETS)
    every = methods.prepare(base, "lora", r=RANK, alpha=ALPHA, targets=lora.ALL_LINEAR)
    n_full = count_parameters(full).trainable
    rows = [ratio_row("trainable parameters: LoRA r=8 q,v / full", count_parameters(qv).trainable, n_full, count),
            ratio_row("trainable parameters: LoRA r=8 all-linear / full", count_parameters(every).trainable,
                      n_full, count)]

    # training step: forward, backward, AdamW; the LoRA limit is ~2/3 (no weight-gradient GEMMs)
    t = interleaved_samples({"full": train_step_fn(full, batch), "qv": train_step_fn(qv, batch),
                             "all": train_step_fn(every, batch)}, rounds, warmup)
    rows += [timing_row("train step: LoRA q,v / full fine-tuning", t, "qv", "full", limit=0.8),
             timing_row("train step: LoRA all-linear / full fine-tuning", t, "all", "full")]

    if peft:
        rows += _peft_rows(base, batch, rounds, warmup)

    # inference: one forward pass of the batch; B made non-zero so the merge changes the weights
    merged, unmerged = (methods.prepare(base, "lora", r=RANK, alpha=ALPHA, targets=TARGETS) for _ in range(2))
    for model in (merged, unmerged):
        lora.randomize_B(model)
    lora.merge(merged)
    plain = copy.deepcopy(base)
    t = interleaved_samples({"base": forward_fn(plain, batch), "merged": forward_fn(merged, batch),
                             "unmerged": forward_fn(unmerged, batch)}, 2 * rounds, warmup)
    rows += [timing_row("inference: merged / base", t, "merged", "base", limit=1.02),
             timing_row("inference: unmerged / base", t, "unmerged", "base")]
    return rows


def _peft_rows(base: nn.Module, batch: torch.Tensor, rounds: int, warmup: int) -> list[Row]:
    """peftlab's LoRA vs PEFT's, same transformers model, same data, same r/alpha/targets."""
    import peft

    from .hf import to_hf

    ours_hf = LogitsOnly(lora.add(to_hf(base), r=RANK, alpha=ALPHA, targets=TARGETS))
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(TARGETS))
    theirs = LogitsOnly(peft.get_peft_model(to_hf(base), config))
    ours = methods.prepare(base, "lora", r=RANK, alpha=ALPHA, targets=TARGETS)
    if count_parameters(ours_hf).trainable != count_parameters(theirs).trainable:
        raise RuntimeError("peftlab and PEFT adapters differ in size; the comparison would be unfair")
    t = interleaved_samples({"peft": train_step_fn(theirs, batch), "ours_hf": train_step_fn(ours_hf, batch),
                             "ours": train_step_fn(ours, batch)}, rounds, warmup)
    memory = {name: memory_report(m, batch).total for name, m in
              (("peft", theirs), ("ours_hf", ours_hf), ("ours", ours))}
    return [timing_row("train step: peftlab / PEFT (same HF Llama)", t, "ours_hf", "peft", limit=1.0),
            timing_row("train step: peftlab (own model) / PEFT (HF Llama)", t, "ours", "peft"),
            ratio_row("train memory: peftlab / PEFT (same HF Llama)", memory["ours_hf"], memory["peft"], mib),
            ratio_row("train memory: peftlab (own model) / PEFT (HF Llama)", memory["ours"], memory["peft"],
                      mib)]


# --- memory ------------------------------------------------------------------------------------

# The methods compared, each built by `methods.prepare` with its own defaults: LoRA r=8 on q,v, QLoRA =
# the same on the 4-bit base, bottleneck adapters m=16, 20 soft-prompt tokens, 10 prefix positions
# through the MLP, P-tuning with 20 tokens from an LSTM encoder. "full" is the reference.
MEMORY_METHODS = tuple(methods.BUILDERS)

MEMORY_CATEGORIES = ("weights", "gradients", "optimizer", "activations", "total")  # total: accounted


def memory_rows(base: nn.Module, batch: torch.Tensor, names: Sequence[str] = MEMORY_METHODS,
                rounds: int = 10, warmup: int = 2) -> list[Row]:
    """Every method against full fine-tuning in one run: bytes by category (`memory_report`, one
    real training step each) and the training step time (interleaved), as ratios method / full.

    `names`: methods of `methods.BUILDERS` (default `MEMORY_METHODS`, each with its defaults); it must
    contain "full". Ratios of 0 mean the category vanishes (a frozen base has no gradients).

    >>> from peftlab import ModelConfig, Transformer
    >>> rows = memory_rows(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)),
    ...                    torch.zeros(2, 8, dtype=torch.long), ("full", "lora"), rounds=1)
    >>> [r.quantity for r in rows][:2]
    ['lora / full: weights', 'lora / full: gradients']
    """
    if isinstance(names, str) or "full" not in names or not set(names) <= set(methods.BUILDERS):
        raise ValueError(f"names must be a list of methods from {list(methods.BUILDERS)} that contains 'full', "
                         f"got {names!r}")
    models = {name: methods.prepare(base, name) for name in names}
    reports = {name: memory_report(m, batch).as_dict() for name, m in models.items()}
    samples = interleaved_samples({name: train_step_fn(m, batch) for name, m in models.items()}, rounds, warmup)
    rows = []
    for name in models:
        if name == "full":
            continue
        rows += [ratio_row(f"{name} / full: {'accounted total' if cat == 'total' else cat}", reports[name][cat],
                           reports["full"][cat], mib)
                 for cat in MEMORY_CATEGORIES]
        rows.append(timing_row(f"{name} / full: train step", samples, name, "full"))
    return rows


# --- the measured peak -------------------------------------------------------------------------

PEAK_TOLERANCE = 0.10  # the goal: the categories live at the peak explain the measured peak within 10%


@dataclass(frozen=True)
class PeakRow:
    """One step of one method: the accounted total, the categories at the measured peak, the peak."""

    method: str
    checkpointing: bool
    step: str  # "first" (Adam's state is created in it) or "later"
    accounted: int
    at_peak: int  # bytes the profiler put in a category at the peak
    peak: int

    @property
    def ratio(self) -> float:
        return self.at_peak / self.peak

    @property
    def verdict(self) -> str:
        return "PASS" if abs(self.ratio - 1) <= PEAK_TOLERANCE else "FAIL"


def peak_rows(base: nn.Module, batch: torch.Tensor, names: Sequence[str] = MEMORY_METHODS) -> list[PeakRow]:
    """Each method with and without gradient checkpointing, on its first and on a later step: one
    profiled step each (`memory_report(..., profile=True)`).

    >>> from peftlab import ModelConfig, Transformer
    >>> rows = peak_rows(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)),
    ...                  torch.zeros(2, 8, dtype=torch.long), ("full",))
    >>> [(r.checkpointing, r.step) for r in rows]
    [(False, 'first'), (False, 'later'), (True, 'first'), (True, 'later')]
    """
    if isinstance(names, str) or not names or not set(names) <= set(methods.BUILDERS):
        raise ValueError(f"names must be a list of methods from {list(methods.BUILDERS)}, got {names!r}")
    rows = []
    for name in names:
        for checkpointing in (False, True):
            for step in ("first", "later"):
                model = methods.prepare(base, name)
                model.set_gradient_checkpointing(checkpointing)
                r = memory_report(model, batch, step=step, profile=True)
                if r.peak is None:
                    raise RuntimeError("the memory bench needs torch.profiler (see the warning above)")
                rows.append(PeakRow(name, checkpointing, step, r.total, r.at_peak_attributed, r.peak))
    return rows


def format_peak_table(rows: list[PeakRow], title: str = "") -> str:
    """The peak table: accounted total, categories at the peak, measured peak, and their ratios.

    >>> print(format_peak_table([PeakRow("full", False, "first", 3 * 2**20, 2**20, 2**20)]))
    method | checkpointing | step  | accounted | at peak  | measured | at peak / measured | accounted / measured | result
    ------ | ------------- | ----- | --------- | -------- | -------- | ------------------ | -------------------- | ------
    full   | off           | first | 3.00 MiB  | 1.00 MiB | 1.00 MiB | 1.000              | 3.000                | PASS
    1 of 1 rows within 10% of the measured peak
    """
    headers = ["method", "checkpointing", "step", "accounted", "at peak", "measured", "at peak / measured",
               "accounted / measured", "result"]
    cells = [[r.method, "on" if r.checkpointing else "off", r.step, mib(r.accounted), mib(r.at_peak), mib(r.peak),
              f"{r.ratio:.3f}", f"{r.accounted / r.peak:.3f}", r.verdict] for r in rows]
    lines = _aligned(headers, cells, title)
    lines.append(f"{sum(r.verdict == 'PASS' for r in rows)} of {len(rows)} rows within "
                 f"{PEAK_TOLERANCE:.0%} of the measured peak")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------

def _int_at_least(least: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an int >= {least}, got {value}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m peftlab.bench", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{lora,memory}")
    p = commands.add_parser("lora", help="LoRA vs full fine-tuning, vs Hugging Face PEFT, and at inference")
    p.add_argument("--batch", type=_int_at_least(1), default=16, help="sequences per batch (default 16)")
    p.add_argument("--seq", type=_int_at_least(1), default=128, help="tokens per sequence (default 128)")
    p.add_argument("--rounds", type=_int_at_least(1), default=15,
                   help="timed repeats of each candidate (default 15)")
    p.add_argument("--warmup", type=_int_at_least(0), default=2,
                   help="untimed calls of each candidate first (default 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-peft", action="store_true", help="skip the Hugging Face PEFT comparison")
    p.set_defaults(run=_run_lora)
    p = commands.add_parser("memory", help="bytes by category and step time of each method, as ratios to full")
    p.add_argument("--batch", type=_int_at_least(1), default=8, help="sequences per batch (default 8)")
    p.add_argument("--seq", type=_int_at_least(1), default=128, help="tokens per sequence (default 128)")
    p.add_argument("--rounds", type=_int_at_least(1), default=10, help="timed repeats of each method (default 10)")
    p.add_argument("--warmup", type=_int_at_least(0), default=2, help="untimed calls of each method first (default 2)")
    p.add_argument("--methods", nargs="+", choices=list(MEMORY_METHODS), default=list(MEMORY_METHODS),
                   help="methods to compare ('full' is always included as the reference)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.set_defaults(run=_run_memory)
    return parser


def _run_lora(args: argparse.Namespace) -> str:
    from .checkpoint import load_base

    base = load_base(device=args.device)
    if args.seq > base.config.max_seq_len:
        raise SystemExit(f"--seq must be <= the model's context of {base.config.max_seq_len}, got {args.seq}")
    batch = torch.randint(0, 256, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    use_peft = peft_available() and not args.no_peft
    rows = lora_rows(base, batch.to(args.device), rounds=args.rounds, warmup=args.warmup, peft=use_peft)
    cpu = platform.processor() or platform.machine()
    title = (f"peftlab bench lora: base {count_parameters(base).total:,} params, batch {args.batch}x{args.seq}, "
             f"LoRA r={RANK} alpha={ALPHA}, {args.rounds} rounds (inference {2 * args.rounds}), interleaved;\n"
             f"times are medians, a time ratio is the median of the per-round ratios\n"
             f"device {args.device} ({cpu}, {torch.get_num_threads()} threads), torch {torch.__version__}"
             + ("" if use_peft else ", PEFT rows skipped"))
    return format_table(rows, title)


def _run_memory(args: argparse.Namespace) -> str:
    from .checkpoint import load_base

    base = load_base(device=args.device)
    if args.seq > base.config.max_seq_len:
        raise SystemExit(f"--seq must be <= the model's context of {base.config.max_seq_len}, got {args.seq}")
    batch = torch.randint(0, 256, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    names = list(dict.fromkeys(["full", *args.methods]))
    rows = memory_rows(base, batch.to(args.device), names, rounds=args.rounds, warmup=args.warmup)
    cpu = platform.processor() or platform.machine()
    setting = (f"base {count_parameters(base).total:,} params, batch {args.batch}x{args.seq}, fp32 + AdamW, "
               f"LoRA r={RANK} alpha={ALPHA} on {','.join(TARGETS)}")
    device = f"device {args.device} ({cpu}, {torch.get_num_threads()} threads), torch {torch.__version__}"
    title = (f"peftlab bench memory: {setting}; accounted bytes from memory_report, {args.rounds} interleaved "
             f"rounds\n{device}")
    peaks = peak_rows(base, batch.to(args.device), names)
    source = "torch.cuda.max_memory_allocated" if args.device.startswith("cuda") else "torch.profiler's allocator events"
    peak_title = (f"\nMeasured peak of one step ({source}) against the categories live at it (the profiler's "
                  f"memory timeline) and the accounted total (weights + gradients + optimizer + activations, "
                  f"which never coexist); {setting}; {device}")
    return format_table(rows, title) + "\n" + format_peak_table(peaks, peak_title)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    print(args.run(args))


if __name__ == "__main__":
    main()
