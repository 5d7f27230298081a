"""Drawing the learning-forgetting trade-off (notebooks 08 and 20), and TradeoffExplorer: one run per
press, its curve added to the plot.
"""

from __future__ import annotations

from collections.abc import Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display
from torch import nn

from .. import data, lora
from ..data import Example
from ..forgetting import Curve, Method, Probe, fact_subset, run


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

    >>> from peftlab import ModelConfig, Transformer
    >>> ex = TradeoffExplorer(Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)), probe=Probe(data.dna_task()["val"][:8], fact_subset(8)),
    ...                       train_data=data.dna_task()["train"][:32])
    >>> c = ex.add("lora", r=8, targets="q,v", lr=1e-3, steps=4)
    >>> c.method.label, [p["step"] for p in c.points]
    ('LoRA r=8 q,v', [0, 1, 2, 3, 4])
    """

    def __init__(self, base: nn.Module, curves: Sequence[Curve] = (), probe: Probe | None = None,
                 train_data: Sequence[str | Example] | None = None, batch_size: int = 16, probes_per_run: int = 8):

        self.base, self.curves = base, list(curves)
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
        self.status = W.HTML()
        self.plot = W.Output()
        self.button.on_click(self.update)
        self.clear.on_click(self.reset)
        self._W = W

    def add(self, kind: str, r: int, targets: str, lr: float, steps: int) -> Curve:
        """One run with these settings; its curve is appended to `self.curves` and returned."""
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {list(TARGETS)}, got {targets!r}")
        method = Method(kind, r=r, targets=TARGETS[targets])
        curve = run(self.base, method, self.train_data, self.probe, lr=lr, steps=steps,
                    every=max(1, steps // self.probes_per_run), batch_size=self.batch_size)
        self.curves.append(curve)
        return curve

    def draw(self) -> None:

        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 4))
            plot_curves(ax, self.curves)
            plt.show()

    def update(self, _=None) -> Curve:
        self.status.value = "training..."
        c = self.add(self.kind.value, self.r.value, self.targets.value, self.lr.value, self.steps.value)
        self.status.value = (f"<b>{c.label}</b>, {c.final['step']} steps: new-domain loss "
                             f"{c.points[0]['domain_loss']:.2f} → {c.final['domain_loss']:.2f}, old knowledge "
                             f"{c.points[0]['old_accuracy']:.0%} → {c.final['old_accuracy']:.0%}")
        self.draw()
        return c

    def reset(self, _=None) -> None:
        self.curves = []
        self.status.value = ""
        self.draw()

    def show(self) -> None:

        W = self._W
        display(W.VBox([W.HBox([self.kind, self.targets]), W.HBox([self.r, self.lr, self.steps]),
                        W.HBox([self.button, self.clear]), self.status, self.plot]))
        self.draw()
