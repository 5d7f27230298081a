"""One builder per method: a fresh trainable copy of a base model, the method added.

    model = methods.prepare(base, "lora", r=8, targets=lora.ALL_LINEAR)   # base is left untouched

`BUILDERS` is a plain dict, name -> the method's own `add` (options passed through unchanged, with
that function's defaults), so every notebook, explorer and benchmark builds a method the same way:

| name | what trains | built by |
|---|---|---|
| "full" | every weight | the copy itself, all parameters trainable |
| "lora" | B A on the target layers | `lora.add` |
| "qlora" | the same LoRA on a 4-bit NF4 base | `qlora.quantize`, then `lora.add` |
| "adapters" | bottleneck adapters | `adapters.add` |
| "prompt" | a soft prompt | `prompt.add` |
| "prefix" | prefixes in every layer | `prefix.add` |
| "ptuning" | a prompt encoder | `ptuning.add` |
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import nn

from . import adapters, lora, prefix, prompt, ptuning, qlora


def full(model: nn.Module) -> nn.Module:
    """Full fine-tuning: every parameter trains."""
    return model.requires_grad_(True)


def qlora_lora(model: nn.Module, quant_type: str = "nf4", double_quant: bool = True, backend: str = "auto",
               **lora_options) -> nn.Module:
    """QLoRA: quantize the base to 4 bits (`qlora.quantize`), then add LoRA (`lora.add`)."""
    return lora.add(qlora.quantize(model, quant_type=quant_type, double_quant=double_quant, backend=backend),
                    **lora_options)


BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "full": full, "lora": lora.add, "qlora": qlora_lora, "adapters": adapters.add,
    "prompt": prompt.add, "prefix": prefix.add, "ptuning": ptuning.add,
}


def prepare(base: nn.Module, name: str, **options) -> nn.Module:
    """A deep copy of `base` with method `name` added (`options` go to its builder); `base` is
    never changed.

    >>> from peftlab import ModelConfig, Transformer, count_parameters
    >>> base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    >>> count_parameters(prepare(base, "lora", r=4)).trainable, count_parameters(base).trainable
    (512, 26912)
    """
    if name not in BUILDERS:
        raise ValueError(f"name (the method) must be one of {list(BUILDERS)}, got {name!r}")
    return BUILDERS[name](copy.deepcopy(base), **options)
