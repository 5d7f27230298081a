"""What only a CUDA GPU can check: `python -m peftlab.gpu_check`.

On one GPU, in a few minutes, it trains a random-init model larger than the base (default
d_model 1024, 8 layers, sequence 512) for a few steps per row and prints one table:

* full fine-tuning in fp32, bf16 (autocast) and fp16 (autocast + `torch.amp.GradScaler`);
* QLoRA: the base quantized to 4-bit NF4 by bitsandbytes' CUDA kernels (`peftlab.qlora`), LoRA
  on every linear layer, bf16 autocast, AdamW; and the same with bitsandbytes' paged AdamW;
* per row: median step time, the bytes `memory_report` accounts for (weights + gradients +
  optimizer + saved activations, less optimizer state that bitsandbytes pages into CUDA unified
  memory, which PyTorch's allocator does not see) against `torch.cuda.max_memory_allocated`
  during that step, their ratio and pass/fail (within `TOLERANCE`).

Each row runs in its own try/except: one that fails prints its error and the others still run.
Without CUDA it says so and exits with status 2. The row functions also run with device="cpu"
(for the precisions and backends the CPU supports), which is how the tests check them.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import torch

from . import lora, qlora
from .measure import memory_report, time_step, train_step_fn
from .model import ModelConfig, Transformer
from .train import autocast, check_precision, lm_loss

TOLERANCE = 0.10  # |peak / accounted - 1| within 10%
ROWS = ("fp32", "bf16", "fp16", "qlora", "qlora-paged")
NO_CUDA_EXIT = 2
COLUMNS = ("row", "method", "precision", "step", "accounted", "peak allocated", "peak / accounted", "memory", "note")


def model_config(d_model: int = 1024, n_layers: int = 8, seq_len: int = 512) -> ModelConfig:
    """The check's model: head size 64, SwiGLU width 8/3 d_model rounded up to a multiple of 16.

    >>> model_config(1024, 8, 512).d_ff
    2736
    """
    d_ff = 16 * math.ceil(8 * d_model / 3 / 16)
    return ModelConfig(d_model=d_model, n_layers=n_layers, n_heads=max(1, d_model // 64), d_ff=d_ff,
                       max_seq_len=seq_len)


def _batch(batch_size: int, seq_len: int, device: str) -> torch.Tensor:
    return torch.randint(0, 256, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)).to(device)


def _step_fn(model: torch.nn.Module, ids: torch.Tensor, optimizer: torch.optim.Optimizer,
             precision: str) -> Callable[[], None]:
    """One training step; fp16 goes through a GradScaler as in `peftlab.train.train`."""
    if precision != "fp16":
        return train_step_fn(model, ids, optimizer, precision)
    scaler = torch.amp.GradScaler("cuda")

    def step() -> None:
        with autocast(precision, ids.device):
            loss = lm_loss(model(ids), ids)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    return step


def _measure(name: str, method: str, precision: str, model: torch.nn.Module, ids: torch.Tensor,
             make_optimizer: Callable[[list], torch.optim.Optimizer], repeats: int, note: str = "") -> dict:
    """Memory of one step (fresh optimizer, so Adam's state is created inside it), then the time."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params)
    report = memory_report(model, ids, optimizer, precision=precision)
    # bitsandbytes pages only state tensors of >= 1e5 elements, in CUDA unified memory that
    # PyTorch's allocator does not see: compare the peak with what the allocator holds
    paged = sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
                if isinstance(t, torch.Tensor) and getattr(t, "is_paged", False))
    seconds = time_step(_step_fn(model, ids, make_optimizer(params), precision), warmup=2, repeats=repeats)
    row = {"row": name, "method": method, "precision": precision, "step_s": seconds, "accounted": report.total - paged,
           "peak": report.peak, "error": None,
           "note": note + (f", {paged / 2**20:.1f} MiB paged" if paged else "")}
    if report.peak is not None:
        row["ratio"] = report.peak / row["accounted"]
        row["memory_ok"] = abs(row["ratio"] - 1) <= TOLERANCE
    return row


def precision_row(precision: str, cfg: ModelConfig, batch_size: int, seq_len: int, device: str = "cuda",
                  repeats: int = 5) -> dict:
    """Full fine-tuning with AdamW in `precision` ("fp32", "bf16", "fp16" with GradScaler).

    >>> r = precision_row("bf16", model_config(64, 1, 16), 2, 16, device="cpu", repeats=1)
    >>> r["method"], r["accounted"] > 0, r["peak"] is None
    ('full', True, True)
    """
    check_precision(precision, torch.device(device))
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    ids = _batch(batch_size, seq_len, device)
    return _measure(precision, "full", precision, model, ids, lambda p: torch.optim.AdamW(p, lr=1e-4), repeats,
                    "GradScaler" if precision == "fp16" else "")


def qlora_row(cfg: ModelConfig, batch_size: int, seq_len: int, device: str = "cuda", paged: bool = False,
              precision: str = "bf16", r: int = 16, repeats: int = 5) -> dict:
    """QLoRA: NF4 base with double quantization (bitsandbytes on CUDA, peftlab's reference
    kernels on the CPU), LoRA r on all linear layers, AdamW or, with `paged`, bitsandbytes'
    paged AdamW (CUDA only: elsewhere this raises RuntimeError).

    >>> row = qlora_row(model_config(64, 1, 16), 2, 16, device="cpu", repeats=1)
    >>> row["method"], row["note"]
    ('qlora', 'reference 4-bit, r=16')
    """
    check_precision(precision, torch.device(device))
    make = (lambda p: qlora.paged_adamw(p, lr=1e-4)) if paged else (lambda p: torch.optim.AdamW(p, lr=1e-4))
    if paged:
        make([torch.nn.Parameter(torch.zeros(1, device=device))])  # fails here, before any work, off CUDA
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    backend = qlora.resolve_backend("auto", device)
    qlora.quantize(model, backend=backend)
    lora.add(model, r=r, alpha=2 * r, targets="all-linear")
    ids = _batch(batch_size, seq_len, device)
    note = f"{backend} 4-bit, r={r}" + (", paged AdamW" if paged else "")
    return _measure("qlora-paged" if paged else "qlora", "qlora", precision, model, ids, make, repeats, note)


def run_rows(rows: Sequence[str], cfg: ModelConfig, batch_size: int, seq_len: int, device: str = "cuda",
             repeats: int = 5, log: Callable[[str], None] | None = None) -> list[dict]:
    """Run each named row in its own try/except; a failing row carries its error and the others
    still run. Between rows the CUDA cache is emptied so each peak is the row's own.

    >>> out = run_rows(["fp16"], model_config(64, 1, 16), 2, 16, device="cpu")
    >>> out[0]["error"].startswith("ValueError")
    True
    """
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"rows must be among {ROWS}, got {unknown}")
    results = []
    for name in rows:
        start = time.perf_counter()
        try:
            if name in ("fp32", "bf16", "fp16"):
                row = precision_row(name, cfg, batch_size, seq_len, device, repeats)
            else:
                row = qlora_row(cfg, batch_size, seq_len, device, paged=name == "qlora-paged", repeats=repeats)
        except Exception as exc:  # noqa: BLE001 - one row's failure must not stop the others
            row = {"row": name, "method": "qlora" if name.startswith("qlora") else "full",
                   "precision": "bf16" if name.startswith("qlora") else name,
                   "error": f"{type(exc).__name__}: {exc}".splitlines()[0][:160]}
            if log:
                log(traceback.format_exc())
        row["wall_s"] = time.perf_counter() - start
        results.append(row)
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return results


def format_table(rows: Sequence[dict]) -> str:
    """A fixed-width text table of `run_rows` results; a failed row shows its error.

    >>> print(format_table([{"row": "fp32", "method": "full", "precision": "fp32", "step_s": 0.0123,
    ...     "accounted": 2**20, "peak": 2**20 + 2**16, "ratio": 1.0625, "memory_ok": True, "error": None,
    ...     "note": ""}]).splitlines()[2])
    fp32 | full   | fp32      | 12.3 ms | 1.0 MiB   | 1.1 MiB        | 1.062            | pass
    """
    def cells(r: dict) -> list[str]:
        if r.get("error"):
            return [r["row"], r.get("method", ""), r.get("precision", ""), "-", "-", "-", "-", "ERROR", r["error"]]
        peak = r.get("peak")
        return [r["row"], r["method"], r["precision"], f"{r['step_s'] * 1e3:.1f} ms",
                f"{r['accounted'] / 2**20:.1f} MiB",
                "n/a (CPU)" if peak is None else f"{peak / 2**20:.1f} MiB",
                "-" if peak is None else f"{r['ratio']:.3f}",
                "-" if peak is None else ("pass" if r["memory_ok"] else "FAIL"), r.get("note", "")]

    body = [cells(r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(COLUMNS, *body)]
    line = lambda cs: " | ".join(str(c).ljust(w) for c, w in zip(cs, widths)).rstrip(" |")  # noqa: E731
    return "\n".join([line(COLUMNS), "-+-".join("-" * w for w in widths)] + [line(b) for b in body])


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options.

    >>> parse_args(["--layers", "2"]).layers, parse_args([]).d_model
    (2, 1024)
    """
    p = argparse.ArgumentParser(prog="python -m peftlab.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--d-model", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per row (median)")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--verbose", action="store_true", help="print each failing row's traceback")
    args = p.parse_args(argv)
    for name in ("d_model", "layers", "seq_len", "batch_size", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.d_model % 64:
        p.error("--d-model must be a multiple of 64 (heads of size 64)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check; returns 0 if every row ran and its memory matched, 1 if not, 2 without CUDA."""
    args = parse_args(argv)
    if not torch.cuda.is_available():
        print("peftlab.gpu_check needs a CUDA GPU and none is available here "
              "(torch.cuda.is_available() is False); nothing was run.", file=sys.stderr)
        return NO_CUDA_EXIT
    cfg = model_config(args.d_model, args.layers, args.seq_len)
    n = sum(p.numel() for p in Transformer(cfg).parameters())
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | model d_model {cfg.d_model}, "
          f"{cfg.n_layers} layers, {n / 1e6:.1f}M parameters | batch {args.batch_size} x seq {args.seq_len}\n",
          flush=True)
    rows = run_rows(args.rows, cfg, args.batch_size, args.seq_len, "cuda", args.repeats,
                    log=(lambda s: print(s, file=sys.stderr)) if args.verbose else None)
    print(format_table(rows))
    ok = all(not r["error"] and r.get("memory_ok", True) for r in rows)
    print(f"\nmemory accounting within {TOLERANCE:.0%} of max_memory_allocated: "
          f"{sum(bool(r.get('memory_ok')) for r in rows)} of {len(rows)} rows; "
          f"{sum(bool(r['error']) for r in rows)} rows failed to run")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
