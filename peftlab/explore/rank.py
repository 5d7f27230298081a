"""RankSweep (notebook 11): pick ranks, the scaling rule, target modules, steps and learning rate; Run
trains one LoRA per rank (`peftlab.rank_sweep.sweep`) in a background thread and draws the loss
curves and a table live; Stop ends the sweep after the current step.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import ipywidgets as W
from IPython.display import display
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import nn

from ..checkpoint import load_base
from ..rank_sweep import DEFAULTS, MAX_RANK, RANKS, SCALINGS, TARGETS, TASKS, check_settings, sweep
from .plots import png


def table_rows(rows: Sequence[dict]) -> list[tuple[str, ...]]:
    """The sweep's rows formatted for `report.table` with `TABLE_HEADERS`."""
    return [(str(r["rank"]), f"{r['trainable']:,}", f"{r['percent']:.2f}%", f"{r['adapter_kb']:.1f}",
             f"{r['step_ms']:.1f} ms", f"{r['final_loss']:.3f}", f"{r.get('test_loss', math.nan):.3f}",
             f"{r.get('accuracy', math.nan):.1%}") for r in rows]


TABLE_HEADERS = ("rank", "trainable", "% of model", "adapter KiB", "median step", "final train loss",
                 "test loss", "test accuracy")


def plot_losses(ax, curves: dict[int, list[float]], title: str = "") -> None:
    """One training-loss curve per rank on `ax`; colours follow the rank, so reruns match."""
    for r, losses in sorted(curves.items()):
        color = _rank_color(r)
        ax.plot(range(1, len(losses) + 1), losses, color=color, label=f"r={r}")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    if title:
        ax.set_title(title, fontsize=10)
    if curves:
        ax.legend(fontsize=8)


def _rank_color(r: int) -> tuple:
    return colormaps["viridis"](math.log2(r) / math.log2(MAX_RANK) * 0.9)


class RankSweep:
    """Pick ranks, the scaling rule, target modules, steps and learning rate; Run trains one LoRA per
    rank and draws the loss curves and a table live; Stop ends the sweep after the current step.

    >>> w = RankSweep()
    >>> w.ranks.value = (1, 2)
    >>> w.steps.value = 5
    >>> w.start(); w.join(); [row["rank"] for row in w.rows]
    [1, 2]
    """

    def __init__(self, base: nn.Module | None = None, redraw_every: int = 5, **defaults):
        self.base = base if base is not None else load_base()
        self.redraw_every = redraw_every
        d = {**DEFAULTS, **defaults}
        self.ranks = W.SelectMultiple(options=RANKS, value=tuple(d["ranks"]), rows=len(RANKS), description="ranks")
        self.scaling = W.ToggleButtons(options=tuple(SCALINGS), value=d["scaling"], description="scaling")
        self.targets = W.Dropdown(options=tuple(TARGETS), value=d["targets"], description="targets")
        self.steps = W.IntSlider(value=d["steps"], min=5, max=300, step=5, description="steps")
        self.lr = W.FloatLogSlider(value=d["lr"], base=10, min=-4, max=-1.5, step=0.25, description="lr",
                                   readout_format=".0e")
        self.task = W.Dropdown(options=tuple(TASKS), value=d["task"], description="task")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.status = W.HTML("Choose ranks and press Run.")
        self.plot = W.Image(format="png", layout=W.Layout(width="760px"))
        self.table = W.HTML()
        self.run_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.rows: list[dict] = []
        self.curves: dict[int, list[float]] = {}
        self.run_settings: dict = self.settings()  # those of the running (or last) sweep, not the live controls
        self.diverged: dict[int, int] = {}  # rank -> the first step whose loss was NaN or infinite
        self.error: Exception | None = None
        self.stopped = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._widget = W.VBox([W.HBox([self.ranks, W.VBox([self.scaling, self.targets, self.steps, self.lr,
                                                            self.task, W.HBox([self.run_button,
                                                                               self.stop_button])])]),
                               self.status, self.plot, self.table])

    def settings(self) -> dict:
        """The controls' values as `sweep` keyword arguments."""
        return {"ranks": tuple(self.ranks.value), "scaling": self.scaling.value, "targets": self.targets.value,
                "steps": int(self.steps.value), "lr": float(self.lr.value), "task": self.task.value}

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Validate the settings and run the sweep in a background thread (no-op while one runs)."""
        if self.running:
            return
        settings = self.settings()
        try:
            check_settings(**settings)
        except (TypeError, ValueError) as e:
            self.status.value = f"<b>cannot run:</b> {e}"
            return
        self.rows, self.curves, self.error, self.stopped = [], {}, None, False
        self.run_settings, self.diverged = settings, {}
        self._stop.clear()
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.table.value = ""
        self.status.value = "starting..."
        self._thread = threading.Thread(target=self._run, args=(settings,), daemon=True, name="rank-sweep")
        self._thread.start()

    def stop(self) -> None:
        """Ask the running sweep to end after its current step."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running sweep to finish (for tests and scripts)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, settings: dict) -> None:
        try:
            self.rows = sweep(**settings, base=self.base, on_step=self._on_step, on_result=self._on_result,
                              stop=self._stop)
            self.stopped = len(self.rows) < len(set(settings["ranks"]))
            done = f"{len(self.rows)} of {len(set(settings['ranks']))} ranks"
            self.status.value = f"<b>stopped</b> after {done}" if self.stopped else f"<b>done</b>: {done}"
        except Exception as e:  # shown in the widget: a thread's traceback would go nowhere visible
            self.error = e
            self.status.value = f"<b>error:</b> {type(e).__name__}: {e}"
        finally:
            self._draw()
            self.run_button.disabled, self.stop_button.disabled = False, True

    def _on_step(self, r: int, step: int, loss: float) -> None:
        self.curves.setdefault(r, []).append(loss)
        steps = self.run_settings["steps"]  # the run's, even if the slider moved since
        if not math.isfinite(loss) and r not in self.diverged:
            self.diverged[r] = step
        if r in self.diverged:
            self.status.value = (f"<b>r={r} diverged</b> at step {self.diverged[r]} (loss {loss}): lower the "
                                 f"learning rate ({self.run_settings['lr']:.0e} with {self.run_settings['scaling']})")
            self._draw()
        elif step % self.redraw_every == 0 or step == 1:
            self.status.value = f"training r={r}: step {step}/{steps}, loss {loss:.3f}"
            self._draw()

    def _on_result(self, row: dict) -> None:
        self.rows = self.rows + [row]
        self.table.value = self.table_html()
        self._draw()

    def table_html(self) -> str:
        """The finished ranks as an HTML table."""
        head = "".join(f"<th>{h}</th>" for h in TABLE_HEADERS)
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for cells in table_rows(self.rows))
        return f"<table class='rank-sweep'><tr>{head}</tr>{body}</table>"

    def figure(self) -> Figure:
        """Loss curves so far (left) and test accuracy per finished rank (right)."""
        fig = Figure(figsize=(9.5, 3.2), dpi=80)
        ax_loss, ax_acc = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
        plot_losses(ax_loss, dict(self.curves), "training loss per rank")
        done = [r for r in self.rows if "accuracy" in r]
        ax_acc.bar([str(r["rank"]) for r in done], [r["accuracy"] for r in done],
                   color=[_rank_color(r["rank"]) for r in done])
        ax_acc.set_ylim(0, 1.05)
        ax_acc.set_xlabel("rank r")
        ax_acc.set_ylabel("test exact match")
        ax_acc.set_title("accuracy after training", fontsize=10)
        fig.tight_layout()
        return fig

    def _draw(self) -> None:
        self.plot.value = png(self.figure())

    def show(self) -> None:
        display(self._widget)
        self._draw()
