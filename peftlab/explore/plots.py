"""Plot helpers the notebooks share: memory by category as stacked bars, AdapterFusion weights as a heatmap."""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

CATEGORIES = ("weights", "gradients", "optimizer", "activations")
COLORS = {"weights": "#4c72b0", "gradients": "#dd8452", "optimizer": "#55a868", "activations": "#c44e52"}


def png(fig: Figure) -> bytes:
    """`fig` as PNG bytes for a `W.Image`, drawn with Agg and without pyplot, so safe off the main thread."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


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


def plot_fusion_weights(weights: torch.Tensor, adapter_names: Sequence[str], ax=None):
    """Heatmap of the mean fusion weight (over batch and tokens) per fusion layer and adapter.
    Padding tokens count too: slice `weights` first to leave them out. Returns the Axes.

    >>> import torch
    >>> ax = plot_fusion_weights(torch.full((2, 1, 3, 2), 0.5), ["qa", "sql"])
    """
    if weights.dim() != 4 or weights.shape[-1] != len(adapter_names):
        raise ValueError(f"weights must have shape (layers, batch, seq, {len(adapter_names)}) to match "
                         f"adapter_names, got {tuple(weights.shape)}")
    mean = weights.float().mean(dim=(1, 2)).cpu()  # (layers, n_adapters)
    if ax is None:
        ax = plt.subplots(figsize=(1.5 + 1.2 * mean.shape[1], 1.0 + 0.5 * mean.shape[0]))[1]
    image = ax.imshow(mean.numpy(), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i, row in enumerate(mean.tolist()):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.5 else "black")
    ax.set_xticks(range(mean.shape[1]), list(adapter_names))
    ax.set_yticks(range(mean.shape[0]))
    ax.set(xlabel="adapter", ylabel="fusion layer", title="mean AdapterFusion weight")
    ax.figure.colorbar(image, ax=ax)
    return ax
