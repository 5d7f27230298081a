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

from . import data
from .checkpoint import load_base
from .measure import count_parameters, memory_report, time_step, train_step_fn
from .train import exact_match, train

CATEGORIES = ("weights", "gradients", "optimizer", "activations")
COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52"}


def stacked_bars(ax, rows: list[dict], labels: list[str]) -> None:
    """One stacked bar per row of bytes by category, in MiB."""
    bottom = [0.0] * len(rows)
    for cat in CATEGORIES:
        values = [r[cat] / 2**20 for r in rows]
        ax.bar(labels, values, bottom=bottom, label=cat, color=COLORS[cat])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("MiB")
    ax.legend(loc="upper left", fontsize=8)


class MemoryExplorer:
    """Turn batch size, sequence length, precision and gradient checkpointing; each change
    runs one real training step of full fine-tuning on the base model and adds a stacked bar
    of measured bytes (weights, gradients, optimizer state, activations) and the step time.

    >>> ex = MemoryExplorer()
    >>> row = ex.measure(batch_size=1, seq_len=16, precision="fp32", checkpointing=False)
    >>> row["weights"] + row["gradients"] + row["optimizer"] == 16 * row["parameters"]
    True
    """

    def __init__(self, model: torch.nn.Module | None = None, max_bars: int = 6):
        self.base = model if model is not None else load_base()
        self.max_bars, self.rows = max_bars, []
        precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
        self.batch_size = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32], value=4, description="batch")
        self.seq_len = W.SelectionSlider(options=[32, 64, 128, 256], value=128, description="seq len")
        self.precision = W.ToggleButtons(options=precisions, value="fp32", description="precision")
        self.checkpointing = W.Checkbox(value=False, description="gradient checkpointing")
        self.status = W.HTML()
        self.plot = W.Output()
        for control in (self.batch_size, self.seq_len, self.precision, self.checkpointing):
            control.observe(self.update, names="value")

    def measure(self, batch_size: int, seq_len: int, precision: str, checkpointing: bool) -> dict:
        """Bytes by category and median step time for one setting (a fresh copy of the base)."""
        model = copy.deepcopy(self.base).to(self.base.device)
        model.set_gradient_checkpointing(checkpointing)
        batch = torch.randint(0, 256, (batch_size, seq_len), generator=torch.Generator().manual_seed(0))
        report = memory_report(model, batch, precision=precision)
        seconds = time_step(train_step_fn(model, batch, precision=precision), warmup=1, repeats=3)
        label = f"b{batch_size} s{seq_len}\n{precision}{' ckpt' if checkpointing else ''}"
        return {**report.as_dict(), "parameters": count_parameters(model).total, "step_s": seconds, "label": label}

    def update(self, _=None) -> dict:
        row = self.measure(self.batch_size.value, self.seq_len.value, self.precision.value, self.checkpointing.value)
        self.rows = (self.rows + [row])[-self.max_bars:]
        self.status.value = (f"<b>{row['label'].replace(chr(10), ' ')}</b>: total {row['total'] / 2**20:.1f} MiB "
                             f"({row['total'] / row['parameters']:.1f} B/param), activations "
                             f"{row['activations'] / 2**20:.1f} MiB, step {row['step_s'] * 1e3:.0f} ms")
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            stacked_bars(ax, self.rows, [r["label"] for r in self.rows])
            ax.set_title("Full fine-tuning, one training step, measured")
            plt.show()
        return row

    def show(self) -> None:
        display(W.VBox([W.HBox([self.batch_size, self.seq_len]), W.HBox([self.precision, self.checkpointing]),
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

