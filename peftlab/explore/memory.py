"""MemoryExplorer (notebooks 01 and 14): one real training step per setting, bytes by category, next to the
calculator's figure for a large published model.
"""

from __future__ import annotations

import threading

import ipywidgets as W
import torch
from IPython.display import display
from matplotlib.figure import Figure

from .. import calculator, methods
from ..checkpoint import load_base
from ..measure import count_parameters, memory_report, time_step, train_step_fn
from ..qlora import import_bitsandbytes
from .plots import png, stacked_bars

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
    each setting runs one real training step on a fresh copy of the base model and adds a stacked
    bar of measured bytes (weights, gradients, optimizer state, activations) and the step time.
    Next to it, `peftlab.calculator` gives the same setting for a large published model, for each
    method.

    The measurement runs on a worker thread, so the controls stay live: a burst of changes is
    measured once, after `debounce` seconds without a change, and a result whose setting no longer
    matches the controls is dropped (counted in `dropped`), never drawn. The large-model controls
    only recalculate the right-hand plot.

    >>> ex = MemoryExplorer()
    >>> row = ex.measure(batch_size=1, seq_len=16, precision="fp32", checkpointing=False)
    >>> row["weights"] + row["gradients"] + row["optimizer"] == 16 * row["parameters"]
    True
    >>> ex.measure(1, 16, "fp32", False, method="lora")["gradients"] < row["gradients"] / 50
    True
    """

    def __init__(self, model: torch.nn.Module | None = None, max_bars: int = 6, large_model: str = "llama-2-7b",
                 debounce: float = 0.4):
        self.base = model if model is not None else load_base()
        self.max_bars, self.debounce, self.rows = max_bars, debounce, []
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
        self.status = W.HTML(layout=W.Layout(min_height="2.5em"))
        self.large_status = W.HTML()
        self.plot = W.Image(format="png", layout=W.Layout(width="62%"))  # both scale with the page
        self.large_plot = W.Image(format="png", layout=W.Layout(width="36%"))
        for control in (self.method, self.optimizer, self.batch_size, self.seq_len, self.precision,
                        self.checkpointing):
            control.observe(self.request, names="value")
        for control in (self.large_model, self.large_seq_len):
            control.observe(self._draw_large, names="value")
        self.measured = self.dropped = 0  # measurements finished, and those dropped as stale
        self.error: Exception | None = None
        self._lock = threading.Lock()
        self._wanted: dict | None = None  # the newest setting not yet taken by the worker
        self._generation = 0  # only the newest change's timer wakes the worker
        self._wake, self._idle = threading.Event(), threading.Event()
        self._idle.set()
        self._worker: threading.Thread | None = None

    def settings(self) -> dict:
        """The small-model controls' values, as `measure` keyword arguments."""
        return {"batch_size": self.batch_size.value, "seq_len": self.seq_len.value,
                "precision": self.precision.value, "checkpointing": self.checkpointing.value,
                "method": self.method.value, "optimizer": self.optimizer.value}

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
        return {**report.as_dict(), "parameters": count_parameters(self.base).total,
                "trainable": count_parameters(model).trainable, "step_s": seconds,
                "label": label(batch_size, seq_len, precision, checkpointing, method, optimizer),
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

    def request(self, _=None) -> None:
        """A small-model control changed: recalculate the large model now, measure after the debounce."""
        self._draw_large()
        with self._lock:  # the worker checks a result against the controls under the same lock
            settings = self.settings()
            self.status.value = f"measuring <b>{label(**settings).replace(chr(10), ' ')}</b> ..."
            self._wanted, self._generation = settings, self._generation + 1
            self._idle.clear()
            generation = self._generation
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, daemon=True, name="memory-explorer")
            self._worker.start()
        timer = threading.Timer(self.debounce, self._fire, args=(generation,))
        timer.daemon = True
        timer.start()

    def wait(self, timeout: float | None = 120) -> bool:
        """Wait until the newest setting is measured and drawn (for tests and scripts); False on timeout."""
        return self._idle.wait(timeout)

    def _fire(self, generation: int) -> None:
        if generation == self._generation:  # no newer change since this timer started
            self._wake.set()

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                settings, self._wanted = self._wanted, None
            if settings is not None:
                self._measure_and_draw(settings)
            with self._lock:
                if self._wanted is None:
                    self._idle.set()

    def _measure_and_draw(self, settings: dict) -> None:
        try:
            row = self.measure(**settings)
        except Exception as e:  # shown in the widget: a thread's traceback would go nowhere visible
            self.error = e
            self.status.value = f"<b>error:</b> {type(e).__name__}: {e}"
            return
        with self._lock:
            self.measured += 1
            if settings != self.settings():  # the controls moved on while this ran: never show it
                self.dropped += 1
                return
            self.rows = (self.rows + [row])[-self.max_bars:]
            self.plot.value = png(self.figure())
            self.status.value = (f"<b>{row['label'].replace(chr(10), ' ')}</b>: total {row['total'] / 2**20:.1f} MiB "
                                 f"({row['total'] / row['parameters']:.1f} B/param), activations "
                                 f"{row['activations'] / 2**20:.1f} MiB, step {row['step_s'] * 1e3:.0f} ms")

    def figure(self) -> Figure:
        """The measured bars so far, one per setting, oldest first."""
        fig = Figure(figsize=(7.4, 3.6), dpi=80)
        ax = fig.subplots()
        stacked_bars(ax, self.rows, [r["label"] for r in self.rows])
        ax.set_title("our base model, one training step, measured")
        fig.tight_layout()
        return fig

    def large_rows(self) -> list[dict]:
        """The calculator's estimate for the large model at the controls' setting, one row per method."""
        s = self.settings()
        return [self.calculate(self.large_model.value, m, s["batch_size"], self.large_seq_len.value, s["precision"],
                               s["checkpointing"], s["optimizer"]) for m in METHODS]

    def _draw_large(self, _=None) -> None:
        large = self.large_rows()
        self.large_status.value = (f"{self.large_model.value}, seq {self.large_seq_len.value}, calculated: "
                                   + ", ".join(f"{e['method']} {e['total'] / 1e9:.1f} GB" for e in large))
        fig = Figure(figsize=(3.7, 3.6), dpi=80)
        ax = fig.subplots()
        stacked_bars(ax, large, list(METHODS), unit="GB")
        ax.set_title(f"{self.large_model.value}, seq {self.large_seq_len.value}, calculated", fontsize=9)
        fig.tight_layout()
        self.large_plot.value = png(fig)

    def show(self) -> None:
        display(W.VBox([W.HBox([self.method, self.optimizer]), W.HBox([self.batch_size, self.seq_len]),
                        W.HBox([self.precision, self.checkpointing]), W.HBox([self.large_model, self.large_seq_len]),
                        self.status, self.large_status,
                        W.HBox([self.plot, self.large_plot], layout=W.Layout(width="100%"))]))
        self.request()


def label(batch_size: int, seq_len: int, precision: str, checkpointing: bool, method: str, optimizer: str) -> str:
    """A setting as a bar's label: method and optimizer, batch and length, precision and checkpointing."""
    return f"{method} {optimizer}\nb{batch_size} s{seq_len}\n{precision}{' ckpt' if checkpointing else ''}"
