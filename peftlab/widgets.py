"""Interactive explorers for the notebooks (ipywidgets + matplotlib).

Each explorer separates its logic from its display: `measure()` / `run()` compute and return
plain dicts (tested without a browser), and the widget only draws what they return.
"""

from __future__ import annotations

import copy

import ipywidgets as W
import matplotlib.pyplot as plt
import torch
from IPython.display import display

from . import calculator, data, lora
from .checkpoint import load_base
from .measure import count_parameters, memory_report, time_step, train_step_fn
from .train import exact_match, train

CATEGORIES = ("weights", "gradients", "optimizer", "activations")
COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52"}


def stacked_bars(ax, rows: list[dict], labels: list[str], unit: str = "MiB") -> None:
    """One stacked bar per row of bytes by category, in MiB (or "GB", "GiB")."""
    scale = {"MiB": 2**20, "GiB": 2**30, "GB": 1e9}[unit]
    bottom = [0.0] * len(rows)
    for cat in CATEGORIES:
        values = [r[cat] / scale for r in rows]
        ax.bar(labels, values, bottom=bottom, label=cat, color=COLORS[cat])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel(unit)
    ax.legend(loc="upper left", fontsize=8)


METHODS = ("full", "lora", "qlora")


def available_optimizers() -> list[str]:
    """Optimizers `MemoryExplorer` can build here: AdamW, SGD, and bitsandbytes' 8-bit AdamW
    where bitsandbytes imports."""
    from .qlora import import_bitsandbytes

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
    from .qlora import import_bitsandbytes

    return import_bitsandbytes().optim.AdamW8bit(params, lr=lr)


def build_method(base: torch.nn.Module, method: str, r: int = 8, targets=("q_proj", "v_proj")) -> torch.nn.Module:
    """A fresh trainable copy of `base` for a method: every weight ("full"), LoRA on the frozen base
    ("lora"), or LoRA on the base quantized to 4-bit NF4 ("qlora", `peftlab.qlora.quantize`)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    model = copy.deepcopy(base)
    if method == "qlora":
        from . import qlora

        model = qlora.quantize(model)
    return model if method == "full" else lora.add(model, r=r, targets=targets)


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
        model = build_method(self.base, method).to(self.base.device)
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


class QAFineTuneExplorer:
    """Fine-tune the base model on Q/A about some people, then ask about everyone: how many
    people the fine-tuning set covers and how long it trains, against accuracy on the people
    it was trained on, on people it never saw in Q/A form, and on fact completion.

    >>> ex = QAFineTuneExplorer()
    >>> r = ex.run(n_people=10, steps=1)
    >>> sorted(r)
    ['fact_completion', 'heldout_qa', 'new_people_qa', 'trained_qa']
    """

    def __init__(self, model: torch.nn.Module | None = None, lr: float = 1e-4, batch_size: int = 16):
        self.base = model if model is not None else load_base()
        self.lr, self.batch_size = lr, batch_size
        self.qa = data.qa_task()
        self.n_people = W.SelectionSlider(options=[2, 5, 10, 20, 40, 60], value=60, description="Q/A people")
        self.steps = W.SelectionSlider(options=[0, 10, 25, 50, 100, 150], value=50, description="steps")
        self.button = W.Button(description="Fine-tune and ask", button_style="primary")
        self.result = W.HTML()
        self.plot = W.Output()
        self.button.on_click(self.update)
        self.history: list[dict] = []

    def run(self, n_people: int, steps: int) -> dict:
        """Full fine-tuning on Q/A about the first `n_people` training people; accuracies after."""
        per_person = len(data.ATTRIBUTES)
        train_set = self.qa["train"][:n_people * per_person]
        model = copy.deepcopy(self.base)
        if steps > 0:
            train(model, train_set, steps=steps, lr=self.lr, batch_size=self.batch_size, progress=False)
        return {"trained_qa": exact_match(model, train_set),
                "heldout_qa": exact_match(model, self.qa["test"]),
                "new_people_qa": exact_match(model, data.stranger_qa()),
                "fact_completion": exact_match(model, data.fact_completion())}

    def update(self, _=None) -> dict:
        self.result.value = "training..."
        r = self.run(self.n_people.value, self.steps.value)
        self.history.append({"label": f"{self.n_people.value}p/{self.steps.value}s", **r})
        self.result.value = " | ".join(f"{k.replace('_', ' ')}: <b>{v:.0%}</b>" for k, v in r.items())
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3))
            for key in r:
                ax.plot([h["label"] for h in self.history], [h[key] for h in self.history], "o-", label=key)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=8)
            plt.show()
        return r

    def show(self) -> None:
        display(W.VBox([W.HBox([self.n_people, self.steps, self.button]), self.result, self.plot]))

