"""The memory calculator: the formulas, the published figures it must reproduce, and the formulas
against `memory_report` on our own base model."""

import copy

import pytest
import torch

from peftlab import calculator as C
from peftlab import lora
from peftlab.measure import count_parameters, memory_report


# --- bytes per parameter -----------------------------------------------------------------------

@pytest.mark.parametrize("method, precision, expected", [
    ("full", "fp32", (4, 4, 8, 0)),        # 16 B/param
    ("full", "mixed", (2, 2, 12, 0)),      # ZeRO: 16 B/param
    ("full", "bf16", (2, 2, 4, 0)),        # everything 16-bit: 8 B/param
    ("lora", "mixed", (4, 4, 8, 2)),       # fp32 adapters with fp32 Adam on a 16-bit frozen base
    ("lora", "fp32", (4, 4, 8, 4)),
    ("lora", "bf16", (2, 2, 4, 2)),
])
def test_bytes_per_parameter(method, precision, expected):
    b = C.bytes_per_parameter(method, precision)
    assert (b.weights, b.gradients, b.optimizer, b.frozen) == expected


def test_sixteen_bytes_per_parameter_in_fp32_and_in_mixed_precision():
    assert C.bytes_per_parameter("full", "fp32").trainable == C.bytes_per_parameter("full", "mixed").trainable == 16


def test_qlora_base_bits_per_parameter():
    # 4 bits + fp32 absmax per 64; double quantization: 8-bit absmax + fp32 per 256 blocks
    assert C.bytes_per_parameter("qlora", "mixed", double_quant=False).frozen == 4.5 / 8
    assert C.bytes_per_parameter("qlora", "mixed").frozen * 8 == pytest.approx(4.127, abs=1e-3)
    assert C.bytes_per_parameter("qlora", "mixed").trainable == 16


def test_optimizers():
    assert C.bytes_per_parameter("full", "mixed", "sgd").optimizer == 4  # fp32 master weights remain
    assert C.bytes_per_parameter("full", "fp32", "sgd").optimizer == 0
    assert C.bytes_per_parameter("full", "bf16", "adamw8bit").optimizer == pytest.approx(2, abs=0.05)


@pytest.mark.parametrize("kwargs, match", [({"method": "prefix"}, "method"), ({"precision": "fp8"}, "precision"),
                                           ({"optimizer": "adam"}, "optimizer")])
def test_bytes_per_parameter_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.bytes_per_parameter(**{"method": "full", **kwargs})


# --- Korthikanti et al. ------------------------------------------------------------------------

def test_activation_bytes_per_layer_is_the_papers_formula():
    s, b, h, a = 2048, 4, 12288, 96
    assert C.activation_bytes_per_layer(s, b, h, a) == s * b * h * (34 + 5 * a * s / h)
    assert C.activation_bytes_per_layer(s, b, h, a, gradient_checkpointing=True) == 2 * s * b * h
    # doubling the sequence more than doubles it (the s^2 attention term)
    assert C.activation_bytes_per_layer(2 * s, b, h, a) > 2 * C.activation_bytes_per_layer(s, b, h, a)
    assert C.activation_bytes_per_layer(s, 2 * b, h, a) == 2 * C.activation_bytes_per_layer(s, b, h, a)


@pytest.mark.parametrize("args", [(0, 1, 8, 2), (8, -1, 8, 2), (8, 1, 8.0, 2), (8, 1, 8, True)])
def test_activation_bytes_per_layer_rejects_bad_input(args):
    with pytest.raises(ValueError, match="must be a positive int"):
        C.activation_bytes_per_layer(*args)


# --- architectures -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, parameters", [
    # parameter counts of the Hugging Face checkpoints
    ("llama-7b", 6_738_415_616), ("llama-2-7b", 6_738_415_616), ("llama-2-13b", 13_015_864_320),
    ("llama-2-70b", 68_976_648_192), ("llama-33b", 32_528_943_616), ("llama-65b", 65_285_660_672),
    ("llama-3.1-8b", 8_030_261_248),
])
def test_parameter_counts_from_the_architecture_table(name, parameters):
    assert C.ARCHITECTURES[name].parameters == parameters


def test_gpt3():
    gpt3 = C.ARCHITECTURES["gpt3-175b"]
    assert gpt3.parameters == pytest.approx(175_255.8e6, rel=0.005)  # the LoRA paper's count
    # LoRA paper, section 7.1 and Table 4: r=4 and r=1 on W_q, W_v
    assert gpt3.lora_parameters(4, ("q_proj", "v_proj")) == 18_874_368
    assert gpt3.lora_parameters(1, ("q_proj", "v_proj")) == pytest.approx(4.7e6, rel=0.01)


def test_our_architecture_matches_our_model(base):
    arch = C.from_config(base.config)
    assert arch.parameters == count_parameters(base).total
    adapted = lora.add(copy.deepcopy(base), r=8, targets="all-linear")
    assert arch.lora_parameters(8, C.ALL_LINEAR) == count_parameters(adapted).trainable


# --- the calculator ----------------------------------------------------------------------------

def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ValueError, match="llama-65b") as err:
        C.estimate("llama-4-1t", "full")
    assert all(name in str(err.value) for name in C.known_models())


@pytest.mark.parametrize("kwargs, match", [
    ({"method": "prompt"}, "method"), ({"batch_size": 0}, "batch_size"), ({"seq_len": 1.5}, "seq_len"),
    ({"lora_rank": 0}, "lora_rank"), ({"lora_targets": ("lm_head",)}, "lora_targets"),
    ({"attention": "sparse"}, "attention"),
    ({"precision": "int8"}, "precision"),
])
def test_estimate_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.estimate(**{"model": "llama-2-7b", "method": "lora", **kwargs})


def test_estimate_categories():
    full = C.estimate("llama-2-7b", "full", batch_size=1, seq_len=512)
    assert full.total == full.weights + full.gradients + full.optimizer + full.activations
    assert full.model_states == 16 * full.parameters and full.per_parameter == 16
    lo = C.estimate("llama-2-7b", "lora", batch_size=1, seq_len=512)
    assert lo.trainable == 4_194_304  # litgpt's table: r=8 on q, v of Llama 2 7B
    assert lo.gradients == 4 * lo.trainable and lo.optimizer == 8 * lo.trainable
    assert lo.weights == 2 * lo.parameters + 4 * lo.trainable
    q = C.estimate("llama-2-7b", "qlora", batch_size=1, seq_len=512)
    assert q.weights < lo.weights / 3
    # activations grow with batch x sequence, the rest does not
    big = C.estimate("llama-2-7b", "full", batch_size=4, seq_len=512)
    assert big.model_states == full.model_states and big.activations == pytest.approx(4 * full.activations)
    ckpt = C.estimate("llama-2-7b", "full", batch_size=4, seq_len=512, gradient_checkpointing=True)
    assert ckpt.activations < big.activations / 5
    eager = C.estimate("llama-2-7b", "full", batch_size=4, seq_len=512, attention="eager")
    assert eager.activations > big.activations


def test_paging_and_optimizer_in_backward():
    e = C.estimate("llama-3.1-8b", "full", precision="bf16", optimizer="adamw8bit", paged_optimizer=True,
                   optimizer_in_backward=True)
    assert e.allocated == e.total - e.optimizer
    arch = C.ARCHITECTURES["llama-3.1-8b"]
    assert e.gradients == 2 * arch.vocab * arch.hidden  # only the largest gradient (the embedding) at once


@pytest.mark.parametrize("row", C.PUBLISHED, ids=lambda r: f"{r.source}: {r.setup}")
def test_published_rows_are_reported_not_judged(row):
    assert not hasattr(row, "tolerance") and not hasattr(row, "within") and row.note
    assert row.deviation() == pytest.approx(row.estimated() / row.figure - 1)


def test_qlora_saves_the_activations_lora_saves():
    """bitsandbytes' MatMul4Bit keeps `ctx.tensors = (None, B)`: no input of a frozen 4-bit layer."""
    for targets in (("q_proj", "v_proj"), "all-linear"):
        settings = dict(batch_size=4, seq_len=2048, lora_targets=targets)
        assert (C.llama_activation_bytes("llama-2-7b", method="qlora", **settings)
                == C.llama_activation_bytes("llama-2-7b", method="lora", **settings))


def test_qlora_fits_65b_on_one_48gb_gpu_and_lora_does_not():
    settings = dict(lora_rank=64, lora_targets="all-linear", seq_len=512, gradient_checkpointing=True,
                    precision="bf16")
    assert C.estimate("llama-65b", "qlora", **settings).total < 48e9
    assert C.estimate("llama-65b", "lora", **settings).total > 2 * 48e9
    assert C.estimate("llama-65b", "full", seq_len=512, gradient_checkpointing=True).total > 1e12


# --- against the measurement on our base model -------------------------------------------------

BATCH = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(0))


def test_model_states_exact_and_activations_close_for_full_fine_tuning(base):
    arch = C.from_config(base.config)
    measured = memory_report(base, BATCH)
    e = C.estimate(arch, "full", batch_size=2, seq_len=32, precision="fp32")
    assert (e.weights, e.gradients, e.optimizer) == (measured.weights, measured.gradients, measured.optimizer)
    assert measured.activations / e.activations == pytest.approx(1.0, abs=0.01)


def test_model_states_exact_and_activations_close_for_lora(base):
    arch = C.from_config(base.config)
    full = memory_report(copy.deepcopy(base), BATCH)
    measured = memory_report(lora.add(base, r=8, targets="all-linear"), BATCH)
    e = C.estimate(arch, "lora", batch_size=2, seq_len=32, precision="fp32", lora_targets="all-linear")
    assert (e.weights, e.gradients, e.optimizer) == (measured.weights, measured.gradients, measured.optimizer)
    assert measured.activations / e.activations == pytest.approx(1.0, abs=0.07)
    assert measured.activations < full.activations  # a frozen layer keeps no input for a weight gradient


def test_checkpointed_activations_are_the_layer_inputs(base):
    arch = C.from_config(base.config)
    base.set_gradient_checkpointing(True)
    measured = memory_report(base, BATCH).activations
    kept = C.llama_activation_bytes(arch, 2, 32, "full", True, element_bytes=4, include_recompute=False)
    assert measured / kept == pytest.approx(1.0, abs=0.05)
