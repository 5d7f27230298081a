"""Drawing the learning-forgetting trade-off (notebooks 08 and 20), and TradeoffExplorer: one run per
press, its curve added to the plot.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import ipywidgets as W
from IPython.display import display
from matplotlib.figure import Figure
from torch import nn

from .. import data, lora
from ..data import Example
from ..forgetting import Curve, Method, Probe, fact_subset, run
from .plots import png

# --- drawing, and an explorer for the notebooks ------------------------------------------------

TARGETS = {"all-linear": lora.ALL_LINEAR, "q,v": ("q_proj", "v_proj")}


def plot_curves(ax, curves: Sequence[Curve], base_accuracy: float | None = None) -> None:
    """The trade-off plot: one line per curve, x = new-domain loss (axis reversed, so further right
    means learned more), y = old-knowledge accuracy; one colour per method, one marker per lr."""
    colours = {}
    markers = "osD^vP*X"
    for c in curves:
        colour = colours.setdefault(c.method.label, f"C{len(colours)}")
        lrs = sorted({k.lr for k in curves if k.method.label == c.method.label})
        i = lrs.index(c.lr)
        ax.plot([p["domain_loss"] for p in c.points], [p["old_accuracy"] for p in c.points],
                marker=markers[i % len(markers)], ms=4, color=colour, label=c.label,
                alpha=1.0 if len(lrs) == 1 else 0.5 + 0.5 * i / (len(lrs) - 1))  # darker = higher lr
    if base_accuracy is not None:
        ax.axhline(base_accuracy, color="grey", lw=0.8, ls=":")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    ax.set_xlabel("new-domain loss  (→ learned more)")
    ax.set_ylabel("old-knowledge accuracy  (↑ forgot less)")
    ax.set_ylim(-0.03, 1.03)
    if curves:
        ax.legend(fontsize=7)


class TradeoffExplorer:
    """Choose a method (full FT or LoRA with a rank and targets), a learning rate and a number of
    steps; each press fine-tunes the base model once on the new domain, probing it every few
    steps, and adds the run's curve to the trade-off plot next to the curves already there.

    Runs train on a worker thread, so the view appears at once and the kernel stays free; `pending`
    runs (keyword arguments of `add`, e.g. a reference) start as soon as the explorer is shown.

    >>> from peftlab import ModelConfig, Transformer
    >>> ex = TradeoffExplorer(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), probe=Probe(data.dna_task()["val"][:8], fact_subset(8)),
    ...                       train_data=data.dna_task()["train"][:32])
    >>> c = ex.add("lora", r=8, targets="q,v", lr=1e-3, steps=4)
    >>> c.method.label, [p["step"] for p in c.points]
    ('LoRA r=8 q,v', [0, 1, 2, 3, 4])
    """

    def __init__(self, base: nn.Module, curves: Sequence[Curve] = (), probe: Probe | None = None,
                 train_data: Sequence[str | Example] | None = None, batch_size: int = 16, probes_per_run: int = 8,
                 pending: Sequence[dict] = ()):
        self.base, self.curves, self.pending = base, list(curves), [dict(p) for p in pending]
        self.train_data = train_data if train_data is not None else data.dna_task()["train"]
        self.probe = probe or Probe(data.dna_task()["val"][:64], fact_subset(120))
        self.batch_size, self.probes_per_run = batch_size, probes_per_run
        self.kind = W.ToggleButtons(options=["full", "lora"], value="lora", description="method")
        self.r = W.SelectionSlider(options=[1, 2, 4, 8, 16, 32, 64, 128], value=8, description="LoRA r")
        self.targets = W.ToggleButtons(options=list(TARGETS), value="all-linear", description="targets")
        self.lr = W.SelectionSlider(options=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=1e-3, description="lr")
        self.steps = W.SelectionSlider(options=[25, 50, 100, 200, 400], value=100, description="steps")
        self.button = W.Button(description="Train and add curve", button_style="primary")
        self.clear = W.Button(description="Clear")
        self.status = W.HTML("Choose a method and press Train.")
        self.plot = W.Image(format="png", layout=W.Layout(width="560px"))
        self.error: Exception | None = None
        self._thread: threading.Thread | None = None
        self.button.on_click(lambda _: self.start(self.settings()))
        self.clear.on_click(self.reset)

    def settings(self) -> dict:
        """The controls' values, as `add` keyword arguments."""
        return {"kind": self.kind.value, "r": self.r.value, "targets": self.targets.value, "lr": self.lr.value,
                "steps": self.steps.value}

    def add(self, kind: str, r: int, targets: str, lr: float, steps: int) -> Curve:
        """One run with these settings; its curve is appended to `self.curves` and returned."""
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {list(TARGETS)}, got {targets!r}")
        method = Method(kind, r=r, targets=TARGETS[targets])
        curve = run(self.base, method, self.train_data, self.probe, lr=lr, steps=steps,
                    every=max(1, steps // self.probes_per_run), batch_size=self.batch_size)
        self.curves.append(curve)
        return curve

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *runs: dict) -> None:
        """Train `runs` (`add` keyword arguments) one after another on a worker thread; no-op while one trains."""
        if self.running or not runs:
            return
        self.button.disabled, self.error = True, None
        self._thread = threading.Thread(target=self._train, args=(runs,), daemon=True, name="tradeoff-explorer")
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the runs in training to finish (for tests and scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _train(self, runs: Sequence[dict]) -> None:
        try:
            for settings in runs:
                label = Method(settings["kind"], r=settings["r"], targets=TARGETS.get(settings["targets"], lora.ALL_LINEAR)).label
                self.status.value = f"training <b>{label}</b> at lr {settings['lr']:g} for {settings['steps']} steps..."
                c = self.add(**settings)
                self.status.value = (f"<b>{c.label}</b>, {c.final['step']} steps: new-domain loss "
                                     f"{c.points[0]['domain_loss']:.2f} → {c.final['domain_loss']:.2f}, old knowledge "
                                     f"{c.points[0]['old_accuracy']:.0%} → {c.final['old_accuracy']:.0%}")
                self.draw()
        except Exception as e:  # shown in the widget: a thread's traceback would go nowhere visible
            self.error = e
            self.status.value = f"<b>error:</b> {type(e).__name__}: {e}"
        finally:
            self.button.disabled = False

    def figure(self) -> Figure:
        """The trade-off plot of the curves so far."""
        fig = Figure(figsize=(7, 4), dpi=80)
        plot_curves(fig.subplots(), self.curves)
        fig.tight_layout()
        return fig

    def draw(self) -> None:
        self.plot.value = png(self.figure())

    def reset(self, _=None) -> None:
        self.curves = []
        self.status.value = ""
        self.draw()

    def show(self) -> None:
        display(W.VBox([W.HBox([self.kind, self.targets]), W.HBox([self.r, self.lr, self.steps]),
                        W.HBox([self.button, self.clear]), self.status, self.plot]))
        self.draw()
        self.start(*self.pending)
        self.pending = []
