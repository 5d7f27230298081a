"""MemoryExplorer (notebooks 01 and 14): one real training step per setting, bytes by category, next to the
calculator's figure for a large published model.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from .. import calculator, methods
from ..checkpoint import load_base
from ..measure import count_parameters, memory_report, time_step, train_step_fn
from ..qlora import import_bitsandbytes
from .plots import stacked_bars

METHODS = ("full", "lora", "qlora")


def available_optimizers() -> list[str]:
    """Optimizers `MemoryExplorer` can build here: AdamW, SGD, and bitsandbytes' 8-bit AdamW
    where bitsandbytes imports."""
    bnb = import_bitsandbytes()
    return ["adamw", "sgd"] + (["adamw8bit"] if bnb is not None and hasattr(bnb, "optim") else [])


def build_optimizer(name: str, params: list[torch.nn.Parameter], lr: float = 1e-4) -> torch.optim.Optimizer:
    """AdamW (two fp32 moments), SGD without momentum (no state) or 8-bit AdamW (two 1-byte moments)."""
    options = available_optimizers()
    if name not in options:
        raise ValueError(f"optimizer must be one of {options} here, got {name!r}")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return import_bitsandbytes().optim.AdamW8bit(params, lr=lr)


class MemoryExplorer:
    """Turn method, optimizer, batch size, sequence length, precision and gradient checkpointing;
    each change runs one real training step on a fresh copy of the base model and adds a stacked
    bar of measured bytes (weights, gradients, optimizer state, activations) and the step time.
    Next to it, `peftlab.calculator` gives the same setting for a large published model, for each
    method.

    >>> ex = MemoryExplorer()
    >>> row = ex.measure(batch_size=1, seq_len=16, precision="fp32", checkpointing=False)
    >>> row["weights"] + row["gradients"] + row["optimizer"] == 16 * row["parameters"]
    True
    >>> ex.measure(1, 16, "fp32", False, method="lora")["gradients"] < row["gradients"] / 50
    True
    """

    def __init__(self, model: torch.nn.Module | None = None, max_bars: int = 6, large_model: str = "llama-2-7b"):
        self.base = model if model is not None else load_base()
        self.max_bars, self.rows = max_bars, []
        precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
        self.method = W.ToggleButtons(options=list(METHODS), value="full", description="method")
        self.optimizer = W.ToggleButtons(options=available_optimizers(), value="adamw", description="optimizer")
        self.batch_size = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=4, description="batch")
        lengths = [n for n in (32, 64, 128, 256) if n <= self.base.config.max_seq_len]
        self.seq_len = W.SelectionSlider(options=lengths, value=min(128, lengths[-1]), description="seq len")
        self.precision = W.ToggleButtons(options=precisions, value="fp32", description="precision")
        self.checkpointing = W.Checkbox(value=False, description="gradient checkpointing")
        self.large_model = W.Dropdown(options=calculator.known_models(), value=large_model, description="large model")
        self.large_seq_len = W.SelectionSlider(options=[256, 512, 1024, 2048, 4096], value=2048,
                                               description="its seq len")
        self.status = W.HTML()
        self.plot = W.Output()
        for control in (self.method, self.optimizer, self.batch_size, self.seq_len, self.precision,
                        self.checkpointing, self.large_model, self.large_seq_len):
            control.observe(self.update, names="value")

    def measure(self, batch_size: int, seq_len: int, precision: str, checkpointing: bool,
                method: str = "full", optimizer: str = "adamw") -> dict:
        """Bytes by category and median step time for one setting (a fresh copy of the base)."""
        if method not in METHODS:  # the ones the calculator also knows
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        model = methods.prepare(self.base, method).to(self.base.device)
        model.set_gradient_checkpointing(checkpointing)
        params = [p for p in model.parameters() if p.requires_grad]
        batch = torch.randint(0, 256, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        report = memory_report(model, batch, optimizer=build_optimizer(optimizer, params), precision=precision)
        seconds = time_step(train_step_fn(model, batch, optimizer=build_optimizer(optimizer, params),
                                          precision=precision), warmup=1, repeats=3)
        label = f"{method} {optimizer}\nb{batch_size} s{seq_len}\n{precision}{' ckpt' if checkpointing else ''}"
        return {**report.as_dict(), "parameters": count_parameters(self.base).total,
                "trainable": count_parameters(model).trainable, "step_s": seconds, "label": label,
                "method": method, "optimizer_name": optimizer}

    @staticmethod
    def calculate(model: str, method: str, batch_size: int, seq_len: int, precision: str, checkpointing: bool,
                  optimizer: str = "adamw") -> dict:
        """`calculator.estimate` for a large model at the explorer's setting: fp32 stays fp32,
        bf16/fp16 autocast maps to ZeRO mixed precision (16-bit weights, fp32 master + moments)."""
        est = calculator.estimate(model, method, batch_size=batch_size, seq_len=seq_len,
                                  gradient_checkpointing=checkpointing,
                                  precision="fp32" if precision == "fp32" else "mixed", optimizer=optimizer)
        return {**est.as_dict(), "label": f"{method}\n{model}"}

    def update(self, _=None) -> dict:
        row = self.measure(self.batch_size.value, self.seq_len.value, self.precision.value, self.checkpointing.value,
                           self.method.value, self.optimizer.value)
        self.rows = (self.rows + [row])[-self.max_bars:]
        large = [self.calculate(self.large_model.value, m, self.batch_size.value, self.large_seq_len.value,
                                self.precision.value, self.checkpointing.value, self.optimizer.value) for m in METHODS]
        self.status.value = (f"<b>{row['label'].replace(chr(10), ' ')}</b>: total {row['total'] / 2**20:.1f} MiB "
                             f"({row['total'] / row['parameters']:.1f} B/param), activations "
                             f"{row['activations'] / 2**20:.1f} MiB, step {row['step_s'] * 1e3:.0f} ms | "
                             f"{self.large_model.value}, seq {self.large_seq_len.value}: "
                             + ", ".join(f"{e['method']} {e['total'] / 1e9:.1f} GB" for e in large))
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, (ax, ax_large) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [2, 1]})
            stacked_bars(ax, self.rows, [r["label"] for r in self.rows])
            ax.set_title("our base model, one training step, measured")
            stacked_bars(ax_large, large, list(METHODS), unit="GB")
            ax_large.set_title(f"{self.large_model.value}, calculated")
            fig.tight_layout()
            plt.show()
        return row

    def show(self) -> None:
        display(W.VBox([W.HBox([self.method, self.optimizer]), W.HBox([self.batch_size, self.seq_len]),
                        W.HBox([self.precision, self.checkpointing]), W.HBox([self.large_model, self.large_seq_len]),
                        self.status, self.plot]))
        self.update()
