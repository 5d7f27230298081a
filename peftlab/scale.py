"""The notebooks' one switch between their CPU setting and a larger GPU setting: `PEFTLAB_SCALE`.

Unset, or "cpu", every notebook runs its CPU setting on the CPU, on any machine, so its compared outputs
are the same with or without a GPU. "gpu" opts in to the larger setting on CUDA (more steps, larger
batches where a notebook has them); then nbval's comparison with the committed CPU outputs does not
apply. Nothing in peftlab switches on `torch.cuda.is_available()` by itself; this is the one place the
variable is read.

    PEFTLAB_SCALE=gpu jupyter lab

>>> import os; os.environ.pop(VARIABLE, None) and None
>>> setting(), gpu(), device()
('cpu', False, 'cpu')
"""

from __future__ import annotations

import os

import torch

VARIABLE = "PEFTLAB_SCALE"
SETTINGS = ("cpu", "gpu")


def setting() -> str:
    """The chosen setting, "cpu" (the default) or "gpu"; anything else is refused with what is allowed."""
    value = os.environ.get(VARIABLE, "cpu").strip().lower() or "cpu"
    if value not in SETTINGS:
        raise ValueError(f"{VARIABLE} must be one of {SETTINGS} (or unset, meaning 'cpu'), got {value!r}")
    if value == "gpu" and not torch.cuda.is_available():
        raise ValueError(f"{VARIABLE}=gpu, but torch finds no CUDA GPU here; unset it or set it to 'cpu'")
    return value


def gpu() -> bool:
    """True only when the GPU setting was asked for (`PEFTLAB_SCALE=gpu`) and CUDA is there."""
    return setting() == "gpu"


def device() -> str:
    """"cuda" in the GPU setting, else "cpu"."""
    return "cuda" if gpu() else "cpu"
