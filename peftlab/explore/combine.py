"""CombineExplorer (notebook 12): a weight slider between two LoRA adapters, both tasks' loss live.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display
from torch import nn

from .. import data, lora  # noqa: F401  (data: the docstring example)
from ..data import Example
from ..multitask import active_lora, combine_scores, score


class CombineExplorer:
    """A slider between two LoRA adapters: weights (1 - t, t), one combination method, and both
    tasks' response loss measured live. Each move adds a point; the single adapters and the base
    model are drawn as reference lines.

    >>> from peftlab import load_base
    >>> model = lora.add(lora.add(load_base(), name="sql"), name="python")
    >>> ex = CombineExplorer(model, {"sql": data.sql_task()["test"][:4], "python": data.python_task()["test"][:4]})
    >>> sorted(ex.measure(0.5, "cat"))
    ['max_error', 'mean_error', 'method', 'parameters', 'python', 'r', 'sql', 't']
    """

    def __init__(self, model: nn.Module, eval_sets: Mapping[str, Sequence[Example]], svd_rank: int = 8):

        names = list(eval_sets)
        if len(names) != 2 or not set(names) <= set(lora.adapter_names(model)):
            raise ValueError(f"eval_sets must have two entries named after LoRA adapters of the model "
                             f"{lora.adapter_names(model)}, got {names}")
        self.model, self.eval_sets, self.names, self.svd_rank = model, dict(eval_sets), names, svd_rank
        self.points: list[dict] = []
        self.reference = self._reference()
        self.t = W.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05,
                               description=f"{names[0]} ← t → {names[1]}", style={"description_width": "initial"})
        self.method = W.ToggleButtons(options=list(lora.METHODS), value="cat", description="method")
        self.status = W.HTML()
        self.plot = W.Output()
        for control in (self.t, self.method):
            control.observe(self.update, names="value")

    def _reference(self) -> dict[str, dict[str, float]]:
        """Each task's loss under each single adapter and under the base model."""
        previous, ref = active_lora(self.model), {}
        for name in self.names:
            lora.set_active(self.model, name)
            ref[name] = {k: score(self.model, v) for k, v in self.eval_sets.items()}
        with lora.disabled(self.model):
            ref["base"] = {k: score(self.model, v) for k, v in self.eval_sets.items()}
        if previous is not None:
            lora.set_active(self.model, previous)
        return ref

    def measure(self, t: float, method: str) -> dict:
        """Both tasks' loss for weights (1 - t, t) combined with `method`."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"t must be in [0, 1], got {t!r}")
        weights = {self.names[0]: 1.0 - t, self.names[1]: t}
        r = combine_scores(self.model, weights, self.eval_sets, method=method,
                           rank=self.svd_rank if method == "svd" else None, name="explorer")
        return {"t": t, "method": method, **r["scores"],
                **{k: r[k] for k in ("r", "parameters", "max_error", "mean_error")}}

    def update(self, _=None) -> dict:

        row = self.measure(self.t.value, self.method.value)
        self.points.append(row)
        a, b = self.names
        self.status.value = (f"<b>{row['method']}</b>, weights ({1 - row['t']:.2f}, {row['t']:.2f}): "
                             f"{a} loss <b>{row[a]:.3f}</b>, {b} loss <b>{row[b]:.3f}</b>; rank {row['r']}, "
                             f"relative error of B A {row['max_error']:.3f}")
        with self.plot:
            self.plot.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(7, 3.2))
            for task, color in zip(self.names, ("#4c72b0", "#dd8452")):
                for method, marker in zip(lora.METHODS, "os^"):
                    pts = sorted((p["t"], p[task]) for p in self.points if p["method"] == method)
                    if pts:
                        ax.plot(*zip(*pts), marker + "-", color=color, alpha=0.8, label=f"{task} loss, {method}")
                ax.axhline(self.reference[task][task], color=color, ls="--", lw=1)
            ax.set_xlabel(f"t (weight on {b}; {a} gets 1 - t)")
            ax.set_ylabel("response loss")
            ax.set_title("dashed: each task under its own adapter")
            ax.legend(fontsize=7, ncol=2)
            plt.show()
        return row

    def show(self) -> None:

        display(W.VBox([W.HBox([self.t, self.method]), self.status, self.plot]))
        self.update()
