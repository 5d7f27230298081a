"""The Self-Instruct funnel as bars, and FunnelExplorer (notebook 19): move the ROUGE-L threshold and
watch how many generations each filter keeps.
"""

from __future__ import annotations

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from ..self_instruct import SelfInstructResult, refilter, seed_tasks  # noqa: F401  (seed_tasks: the docstring example)


def plot_funnel(counts: dict[str, int], title: str) -> None:
    """The funnel as horizontal bars, first stage on top, each labelled with its count."""
    stages, values = list(counts)[::-1], list(counts.values())[::-1]
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.barh(stages, values, color="#4c72b0")
    for y, v in enumerate(values):
        ax.text(v, y, f" {v}", va="center")
    ax.set_xlabel("generations")
    ax.set_title(title)
    plt.tight_layout()
    plt.show()


class FunnelExplorer:
    """Move the ROUGE-L threshold and watch how many generations each filter keeps.

    >>> ex = FunnelExplorer(SelfInstructResult(seed_tasks()))
    >>> ex.funnel(0.7)
    {'generated': 0, 'well-formed': 0, 'novel': 0, 'correct': 0}
    """

    def __init__(self, result: SelfInstructResult):
        self.result = result
        self.threshold = W.FloatSlider(value=0.7, min=0.05, max=1.0, step=0.05, description="ROUGE-L <")
        self.plot = W.Output()
        self.threshold.observe(self.update, names="value")
        self.widget = W.VBox([self.threshold, self.plot])

    def funnel(self, threshold: float) -> dict[str, int]:
        return refilter(self.result, threshold).funnel()

    def update(self, _=None) -> dict[str, int]:
        counts = self.funnel(self.threshold.value)
        with self.plot:
            self.plot.clear_output(wait=True)
            plot_funnel(counts, f"funnel at ROUGE-L threshold {self.threshold.value:.2f}")
        return counts

    def show(self) -> None:
        display(self.widget)
        self.update()
