"""Training memory from first principles: bytes per parameter, activations, and a calculator for
published models, set next to what `peftlab.measure.memory_report` counts on our own model.

Four categories, as `memory_report` counts them:

* weights, gradients, optimizer state: a number of bytes per parameter (`bytes_per_parameter`).
  Adam keeps two moments per trained parameter. fp32 training: 4 + 4 + 8 = 16 B/param. Mixed
  precision (ZeRO, Rajbhandari et al. 2019, arXiv 1910.02054, section 3.1): a 16-bit copy of the
  weights (2) and 16-bit gradients (2), plus fp32 master weights and two fp32 moments (12) = 16
  B/param. LoRA (Hu et al. 2021, arXiv 2106.09685) freezes the base, which then costs only its
  weights (2 B/param in 16-bit); only the small adapters carry gradients and Adam state. QLoRA
  (Dettmers et al. 2023, arXiv 2305.14314) stores the frozen linear layers in 4-bit NF4: 4 bits +
  one fp32 absmax per 64 weights = 4.5 bits; double quantization stores those constants in 8 bits
  per block of 64 plus one fp32 per 256 blocks: 4 + 8/64 + 32/(64*256) = 4.127 bits = 0.516 B/param.

* activations: what autograd keeps for the backward pass; grows with batch x sequence length.
  Korthikanti et al. 2022 (arXiv 2205.05198, section 4.1) count, for a GPT layer in 16-bit with
  dropout and a GELU MLP of width 4h, s*b*h*(34 + 5*a*s/h) bytes (`activation_bytes_per_layer`).
  The s^2 term is the attention matrix (softmax output, dropout mask, dropout output); with
  FlashAttention it is never stored. With full gradient checkpointing (Chen et al. 2016, arXiv
  1604.06174) a layer keeps only its input, 2*s*b*h bytes, and one layer's activations exist
  again while it is recomputed in the backward pass.

Our model (and Llama) differs from the GPT layer of that formula: SwiGLU instead of GELU (three
matrices of width f instead of two of width 4h), RMSNorm, no dropout, no biases, rotary positions,
grouped-query attention in the larger Llamas, and on the CPU PyTorch's scaled-dot-product attention
keeps no s x s matrix. `llama_activation_bytes` counts the tensors such a layer saves, the same
way `memory_report` finds them (tests/test_calculator.py checks it against the measurement):

    per token and layer, in elements, full fine-tuning:
      attention  norm input, normalized, norm output (= q/k/v input): 3h; q, k, v: h + 2 h_kv;
                 attention output (= o_proj input): h; FlashAttention's logsumexp: a (fp32)
      MLP        norm: 3h; gate output, silu output, up output, their product (= down input): 4f
    a frozen base saves less: a frozen linear layer needs no input for a weight gradient, and a
    frozen norm weight needs no normalized copy: 2h + h + 2 h_kv + 3f, plus the inputs of the
    adapted layers (h per block whose inputs feed an adapter, f for down_proj, r per adapter).
    eager attention adds the a x s attention probabilities per token (the s^2 term).

`estimate(model, method, ...)` puts this together for published architectures
(`known_models()`), and `PUBLISHED` lists the figures it is checked against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .checks import positive_int

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("fp32", "mixed", "bf16")
OPTIMIZERS = ("adamw", "adamw8bit", "sgd")
ATTENTIONS = ("flash", "eager")
ATTENTION_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTENTION_TARGETS + MLP_TARGETS

# NF4 with blocksize 64: 4 bits + an fp32 absmax per block; with double quantization the absmax
# are 8-bit (blocksize 256) with one fp32 constant per 256 blocks (Dettmers et al. 2023, section 3).
NF4_BITS = 4 + 32 / 64                          # 4.5
NF4_DQ_BITS = 4 + 8 / 64 + 32 / (64 * 256)      # 4.127
# bitsandbytes 8-bit Adam (Dettmers et al. 2021, arXiv 2110.02861): two 1-byte states, each with an
# fp32 absmax per block of 256 (block-wise quantization; as measured on bitsandbytes 0.50)
ADAM8BIT_BYTES = 2 * (1 + 4 / 256)


@dataclass(frozen=True)
class Architecture:
    """Shape of a decoder-only transformer, enough to count its parameters and activations."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    mlp: str = "swiglu"          # "swiglu" (Llama: gate, up, down) or "gelu" (GPT: fc, proj)
    tied_embeddings: bool = False
    extra_parameters: int = 0    # GPT-3: biases, LayerNorm shifts, learned positions
    source: str = ""

    @property
    def kv_hidden(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of every linear layer of one block, by Llama module name."""
        h, f, kv = self.hidden, self.intermediate, self.kv_hidden
        shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h)}
        if self.mlp == "swiglu":
            shapes.update(gate_proj=(h, f), up_proj=(h, f), down_proj=(f, h))
        else:  # GPT's fc -> gelu -> proj, named like Llama's up and down
            shapes.update(up_proj=(h, f), down_proj=(f, h))
        return shapes

    @property
    def linear_parameters(self) -> int:
        """Parameters in the blocks' linear layers: what QLoRA stores in 4 bits."""
        return self.layers * sum(i * o for i, o in self.linear_shapes().values())

    @property
    def parameters(self) -> int:
        """All parameters: blocks' linears, two norm weights per block, final norm, embeddings, head."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_parameters + norms + embeddings + self.extra_parameters

    def lora_parameters(self, rank: int, targets: tuple[str, ...]) -> int:
        """r * (in + out) per adapted layer (Hu et al. 2021, section 4.1)."""
        shapes = self.linear_shapes()
        return self.layers * sum(rank * sum(shapes[t]) for t in targets if t in shapes)


def _gpt3_extra(layers: int, h: int, f: int, context: int) -> int:
    # biases of qkv (3h), out (h), fc (f), proj (h); LayerNorm shifts (2h per block, h final);
    # learned positions (context x h)
    return layers * (3 * h + h + f + h + 2 * h) + h + context * h


# Sources: the models' config.json on the Hugging Face Hub (meta-llama/Llama-2-*-hf,
# huggyllama/llama-*, meta-llama/Llama-3.1-8B) and Touvron et al. 2023 (arXiv 2302.13971,
# Table 2; arXiv 2307.09288, Table 1); GPT-3: Brown et al. 2020 (arXiv 2005.14165, Table 2.1).
# The parameter counts these give are checked against the published ones in the tests.
ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in [
    Architecture("llama-7b", 32, 4096, 32, 32, 11008, 32000, source="LLaMA, arXiv 2302.13971"),
    Architecture("llama-33b", 60, 6656, 52, 52, 17920, 32000, source="LLaMA, arXiv 2302.13971"),
    Architecture("llama-65b", 80, 8192, 64, 64, 22016, 32000, source="LLaMA, arXiv 2302.13971"),
    Architecture("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, source="Llama 2, arXiv 2307.09288"),
    Architecture("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, source="Llama 2, arXiv 2307.09288"),
    Architecture("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, source="Llama 2, arXiv 2307.09288 (GQA, 8 KV heads)"),
    Architecture("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, source="Llama 3, arXiv 2407.21783 (GQA, 8 KV heads)"),
    Architecture("gpt3-175b", 96, 12288, 96, 96, 4 * 12288, 50257, mlp="gelu", tied_embeddings=True,
                 extra_parameters=_gpt3_extra(96, 12288, 4 * 12288, 2048), source="GPT-3, arXiv 2005.14165"),
]}


def known_models() -> list[str]:
    """Names `estimate` accepts.

    >>> "llama-65b" in known_models()
    True
    """
    return list(ARCHITECTURES)


def architecture(model: str | Architecture) -> Architecture:
    """The `Architecture` of a known model name (an `Architecture` is returned as is)."""
    if isinstance(model, Architecture):
        return model
    if model not in ARCHITECTURES:
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(known_models())} "
                         f"(or pass an Architecture, e.g. from_config(model.config))")
    return ARCHITECTURES[model]


def from_config(config, name: str = "peftlab") -> Architecture:
    """The `Architecture` of a peftlab `ModelConfig` (our model: SwiGLU, untied, no biases).

    >>> from peftlab import load_base
    >>> from_config(load_base().config).parameters
    3297024
    """
    return Architecture(name, config.n_layers, config.d_model, config.n_heads, config.n_heads, config.d_ff,
                        config.vocab_size, source="peftlab ModelConfig")


# --- bytes per parameter -----------------------------------------------------------------------

@dataclass(frozen=True)
class BytesPerParameter:
    """Bytes per parameter: `weights`, `gradients`, `optimizer` for each parameter that trains,
    `frozen` for each parameter of a frozen base (0 when nothing is frozen)."""

    weights: float
    gradients: float
    optimizer: float
    frozen: float = 0.0

    @property
    def trainable(self) -> float:
        return self.weights + self.gradients + self.optimizer


def _check(name: str, value, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")


def bytes_per_parameter(method: str, precision: str = "mixed", optimizer: str = "adamw",
                        double_quant: bool = True) -> BytesPerParameter:
    """Bytes per parameter for weights, gradients and optimizer state.

    precision: "fp32" (everything fp32), "mixed" (ZeRO: 16-bit weights and gradients, fp32 master
    weights and moments; adapters of LoRA/QLoRA stay fp32, as in PEFT), "bf16" (everything 16-bit,
    litgpt's "bf16-true", torchtune's dtype=bf16). optimizer: "adamw" (two moments), "adamw8bit"
    (bitsandbytes, two 8-bit moments), "sgd" (no state).

    >>> bytes_per_parameter("full", "fp32").trainable, bytes_per_parameter("full", "mixed").trainable
    (16.0, 16.0)
    >>> round(bytes_per_parameter("qlora", "mixed").frozen, 3)
    0.516
    """
    _check("method", method, METHODS)
    _check("precision", precision, PRECISIONS)
    _check("optimizer", optimizer, OPTIMIZERS)
    if method == "full" and precision == "mixed":
        weights, gradients, master = 2.0, 2.0, 4.0
        state = {"adamw": 8.0, "adamw8bit": ADAM8BIT_BYTES, "sgd": 0.0}[optimizer]
        return BytesPerParameter(weights, gradients, master + state)
    element = 2.0 if precision == "bf16" else 4.0  # LoRA adapters under "mixed" are fp32
    state = {"adamw": 2 * element, "adamw8bit": ADAM8BIT_BYTES, "sgd": 0.0}[optimizer]
    if method == "full":
        return BytesPerParameter(element, element, state)
    frozen = 4.0 if precision == "fp32" else 2.0
    if method == "qlora":
        frozen = (NF4_DQ_BITS if double_quant else NF4_BITS) / 8
    return BytesPerParameter(element, element, state, frozen)


# --- activations -------------------------------------------------------------------------------

def activation_bytes_per_layer(seq_len: int, batch_size: int, hidden: int, heads: int,
                               gradient_checkpointing: bool = False) -> int:
    """Korthikanti et al. 2022 (arXiv 2205.05198, eq. 1): bytes one GPT layer keeps for the backward
    pass in 16-bit, s*b*h*(34 + 5*a*s/h), no tensor or sequence parallelism. With gradient
    checkpointing a layer keeps only its input, 2*s*b*h bytes.

    >>> activation_bytes_per_layer(2048, 1, 12288, 96) / 2**30  # one GPT-3 layer
    2.671875
    """
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("hidden", hidden), ("heads", heads)):
        positive_int(value, name)
    s, b, h, a = seq_len, batch_size, hidden, heads
    if gradient_checkpointing:
        return 2 * s * b * h
    return s * b * h * 34 + 5 * a * s * s * b


def _layer_elements(arch: Architecture, frozen: bool, adapted: tuple[str, ...], rank: int) -> int:
    """Elements saved per token by one block (see the module docstring), attention scores aside."""
    h, f, kv = arch.hidden, arch.intermediate, arch.kv_hidden
    n_adapters = len([t for t in adapted if t in arch.linear_shapes()])
    mlp_saved = 4 * f if arch.mlp == "swiglu" else 2 * f  # gelu: its input, and fc -> proj input
    if not frozen:
        return 3 * h + (h + 2 * kv) + h + 3 * h + mlp_saved
    mlp_frozen = 3 * f if arch.mlp == "swiglu" else f       # gate, silu, up outputs / gelu input
    elements = 2 * h + h + 2 * kv + mlp_frozen              # two norm inputs; q, k, v; attention output
    if set(adapted) & {"q_proj", "k_proj", "v_proj"}:
        elements += h                                       # norm output feeds the adapters' A
    if set(adapted) & {"gate_proj", "up_proj"}:
        elements += h                                       # norm output feeds the MLP's adapters
    if "down_proj" in adapted:
        elements += f
    return elements + rank * n_adapters


def llama_activation_bytes(model: str | Architecture, batch_size: int, seq_len: int, method: str = "full",
                           gradient_checkpointing: bool = False, element_bytes: int = 2,
                           attention: str = "flash", lora_rank: int = 8,
                           lora_targets: tuple[str, ...] | str = ("q_proj", "v_proj"),
                           include_recompute: bool = True) -> int:
    """Activation bytes of one training step of a Llama-style model (the module docstring's count).

    Without checkpointing: every layer's saved tensors, FlashAttention's fp32 logsumexp (or, eager,
    the a x s x s probabilities), the final norm and the fp32 log-softmax of the logits. With
    checkpointing: each layer's input, plus one layer recomputed during backward
    (`include_recompute=False` leaves that transient layer out, as `memory_report` does, which only
    sees what the forward pass saved). QLoRA saves what LoRA saves: a frozen 4-bit layer needs no
    input for a weight gradient, and bitsandbytes' 4-bit matmul (`MatMul4Bit`, 0.45 to 0.50.2) keeps
    only the packed weight, `ctx.tensors = (None, B)`; torchao's NF4 linear (torchtune) keeps none either.

    >>> llama_activation_bytes("llama-2-7b", 1, 2048) / 2**30 > 10
    True
    """
    arch = architecture(model)
    _check("method", method, METHODS)
    _check("attention", attention, ATTENTIONS)
    positive_int(batch_size, "batch_size")
    positive_int(seq_len, "seq_len")
    targets = _targets(lora_targets)
    tokens = batch_size * seq_len
    frozen = method != "full"
    layer = _layer_elements(arch, frozen, targets, lora_rank) * element_bytes * tokens
    layer += arch.heads * 4 * tokens if attention == "flash" else arch.heads * seq_len * element_bytes * tokens
    head = ((3 if not frozen else 1) * arch.hidden * element_bytes + arch.vocab * 4) * tokens
    if gradient_checkpointing:
        inputs = arch.layers * arch.hidden * element_bytes * tokens
        return inputs + (layer if include_recompute else 0) + head
    return arch.layers * layer + head


def _targets(lora_targets: tuple[str, ...] | str) -> tuple[str, ...]:
    if lora_targets == "all-linear":
        return ALL_LINEAR
    if isinstance(lora_targets, str):
        lora_targets = (lora_targets,)
    unknown = [t for t in lora_targets if t not in ALL_LINEAR]
    if unknown:
        raise ValueError(f"lora_targets must be 'all-linear' or names from {ALL_LINEAR}, got {unknown}")
    return tuple(lora_targets)


# --- the calculator ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Estimate:
    """Bytes by category for one training step; `total` is their sum. `paged_optimizer`: the
    optimizer state lives in CUDA unified memory (bitsandbytes' paged optimizers), which
    `torch.cuda.max_memory_allocated` does not see; `allocated` is what that counter would show."""

    model: str
    method: str
    parameters: int
    trainable: int
    weights: int
    gradients: int
    optimizer: int
    activations: int
    paged_optimizer: bool = False

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    @property
    def model_states(self) -> int:
        """Weights + gradients + optimizer: what ZeRO calls the model states."""
        return self.weights + self.gradients + self.optimizer

    @property
    def per_parameter(self) -> float:
        """Model states per parameter (bytes)."""
        return self.model_states / self.parameters

    @property
    def allocated(self) -> int:
        return self.total - (self.optimizer if self.paged_optimizer else 0)

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


def estimate(model: str | Architecture, method: str, batch_size: int = 1, seq_len: int = 2048,
             gradient_checkpointing: bool = False, lora_rank: int = 8,
             lora_targets: tuple[str, ...] | str = ("q_proj", "v_proj"), precision: str = "mixed",
             optimizer: str = "adamw", double_quant: bool = True, attention: str = "flash",
             paged_optimizer: bool = False, optimizer_in_backward: bool = False) -> Estimate:
    """Bytes of weights, gradients, optimizer state and activations for one training step.

    method: "full", "lora" or "qlora" (LoRA on a 4-bit NF4 base; embeddings, norms and the output
    head stay 16-bit). `optimizer_in_backward`: each gradient is applied and freed as soon as it is
    computed (torchtune), so only the largest one exists at a time. Other arguments:
    `bytes_per_parameter`.

    >>> e = estimate("llama-2-7b", "full", batch_size=1, seq_len=512)
    >>> e.model_states / e.parameters
    16.0
    >>> estimate("llama-65b", "qlora", lora_rank=64, lora_targets="all-linear", seq_len=512,
    ...          gradient_checkpointing=True, precision="bf16").total < 48e9  # fits one 48 GB GPU
    True
    """
    arch = architecture(model)
    _check("method", method, METHODS)
    positive_int(batch_size, "batch_size")
    positive_int(seq_len, "seq_len")
    positive_int(lora_rank, "lora_rank")
    targets = _targets(lora_targets)
    per = bytes_per_parameter(method, precision, optimizer, double_quant)
    n = arch.parameters
    if method == "full":
        trainable = n
        weights = per.weights * n
        largest = max(arch.vocab * arch.hidden, max(i * o for i, o in arch.linear_shapes().values()))
    else:
        trainable = arch.lora_parameters(lora_rank, targets)
        if method == "qlora":  # only the blocks' linear layers are 4-bit
            other = 4.0 if precision == "fp32" else 2.0
            frozen = per.frozen * arch.linear_parameters + other * (n - arch.linear_parameters)
        else:
            frozen = per.frozen * n
        weights = frozen + per.weights * trainable
        largest = max(lora_rank * max(i, o) for i, o in arch.linear_shapes().values())
    gradients = per.gradients * (largest if optimizer_in_backward else trainable)
    element = 4 if precision == "fp32" else 2
    activations = llama_activation_bytes(arch, batch_size, seq_len, method, gradient_checkpointing, element,
                                         attention, lora_rank, targets)
    return Estimate(arch.name, method, n, trainable, int(weights), int(gradients), int(per.optimizer * trainable),
                    activations, paged_optimizer)


# --- published figures -------------------------------------------------------------------------

GB, GiB = 1e9, 2**30


@dataclass(frozen=True)
class Published:
    """A published memory figure, the `estimate` settings that match its setup, what to compare
    ("total", "allocated", "model_states", "per_parameter" or "weights") and why the two may differ.

    No tolerance: a deviation is reported, never judged, because the sources leave out parts of their
    setups (kernels, allocator overhead, transient buffers) that no single tolerance could cover."""

    source: str
    setup: str
    figure: float  # bytes
    unit: str
    settings: dict
    compare: str
    note: str

    def estimate(self) -> Estimate:
        return estimate(**self.settings)

    def estimated(self) -> float:
        return float(getattr(self.estimate(), self.compare))

    def deviation(self) -> float:
        """estimated / published - 1."""
        return self.estimated() / self.figure - 1


_GUANACO = dict(method="qlora", lora_rank=64, lora_targets="all-linear", precision="mixed")
_TORCHTUNE = dict(model="llama-3.1-8b", batch_size=2, seq_len=2048, gradient_checkpointing=True, precision="bf16")
_LITGPT = dict(model="llama-2-7b", batch_size=1, seq_len=1304, precision="bf16", lora_rank=8)

PUBLISHED: list[Published] = [
    Published("ZeRO, arXiv 1910.02054", "mixed-precision Adam, per parameter", 16, "B/param",
              dict(model="llama-2-7b", method="full", precision="mixed"), "per_parameter",
              "exact: 2 + 2 + 12 bytes per parameter (compared per parameter)"),
    Published("LoRA, arXiv 2106.09685", "GPT-3 175B, LoRA r=4 on q,v", 350 * GB, "GB",
              dict(model="gpt3-175b", method="lora", lora_rank=4, precision="mixed"), "model_states",
              "the 16-bit frozen weights (2 B/param); activations depend on the unpublished per-GPU batch"),
    Published("LoRA, arXiv 2106.09685", "GPT-3 175B, full fine-tuning", 1.2e12, "TB",
              dict(model="gpt3-175b", method="full", precision="bf16"), "model_states",
              "the paper does not say how it counted; 16-bit weights, gradients and Adam moments "
              "(8 B/param) come within 20%; ZeRO's 16 B/param would give 2.8 TB"),
    Published("QLoRA, arXiv 2305.14314", "Guanaco 7B (4-bit model + adapters)", 5 * GB, "GB",
              dict(model="llama-7b", **_GUANACO), "weights",
              "a model footprint, not a training peak; fits better without double quantization (4.5 bits)"),
    Published("QLoRA, arXiv 2305.14314", "Guanaco 33B (4-bit model + adapters)", 21 * GB, "GB",
              dict(model="llama-33b", **_GUANACO), "weights",
              "a model footprint, not a training peak; fits better without double quantization (4.5 bits)"),
    Published("QLoRA, arXiv 2305.14314", "Guanaco 65B (4-bit model + adapters)", 41 * GB, "GB",
              dict(model="llama-65b", **_GUANACO), "weights",
              "a model footprint, not a training peak; fits better without double quantization (4.5 bits)"),
    Published("torchtune README", "Llama 3.1 8B full, 1x RTX 4090, bs 2, seq 2048", 18.9 * GiB, "GiB",
              dict(method="full", optimizer="adamw8bit", paged_optimizer=True, optimizer_in_backward=True,
                   **_TORCHTUNE), "allocated",
              "recipe: bf16 weights, paged 8-bit AdamW (unified memory, outside the allocator's peak), "
              "optimizer step in the backward, activation checkpointing; torch.compile not modelled"),
    Published("torchtune README", "Llama 3.1 8B LoRA, 1x RTX 4090, bs 2, seq 2048", 16.2 * GiB, "GiB",
              dict(method="lora", lora_rank=8, lora_targets=("q_proj", "v_proj", "o_proj") + MLP_TARGETS,
                   **_TORCHTUNE), "total",
              "recipe: bf16 everywhere, r=8 on q,v,o and the MLP, activation checkpointing; chunked "
              "cross-entropy and torch.compile (less logit memory) not modelled"),
    Published("torchtune README", "Llama 3.1 8B QLoRA, 1x RTX 4090, bs 2, seq 2048", 7.4 * GiB, "GiB",
              dict(method="qlora", lora_rank=8, lora_targets="all-linear", **_TORCHTUNE),
              "total",
              "recipe: NF4 base (torchao), bf16 adapters, activation checkpointing; chunked cross-entropy "
              "and torch.compile not modelled, so the logits weigh more here"),
    Published("litgpt resource tables", "Llama 2 7B LoRA, A100 40GB, micro-batch 1, longest sample 1304", 21.30 * GB,
              "GB", dict(method="lora", **_LITGPT), "total",
              "bf16-true, r=8 on q,v, no checkpointing; LoRA dropout 0.05 (its saved copies not modelled)"),
    Published("litgpt resource tables", "Llama 2 7B LoRA + bnb.nf4, A100 40GB, micro-batch 1", 14.14 * GB, "GB",
              dict(method="qlora", double_quant=False, **_LITGPT), "total",
              "bitsandbytes dequantizes each 4-bit weight to a 16-bit copy in the forward and again in the "
              "backward (transient buffers, not modelled); its 4-bit matmul keeps no input"),
]
