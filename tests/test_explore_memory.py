"""MemoryExplorer's logic, without a browser: what it measures and what it calculates."""

import pytest

from peftlab import calculator
from peftlab.explore import memory as widgets
from peftlab.measure import count_parameters


@pytest.fixture
def explorer(tiny_model):
    return widgets.MemoryExplorer(tiny_model, max_bars=2)


def test_full_fine_tuning_is_sixteen_bytes_per_parameter(explorer, tiny_model):
    row = explorer.measure(2, 16, "fp32", False)  # the call notebook 01 makes
    n = count_parameters(tiny_model).total
    assert (row["weights"], row["gradients"], row["optimizer"]) == (4 * n, 4 * n, 8 * n)
    assert row["parameters"] == row["trainable"] == n and row["step_s"] > 0
    assert row["method"] == "full" and row["label"].startswith("full adamw")


def test_lora_and_qlora_keep_state_only_for_the_adapters(explorer, tiny_model):
    full = explorer.measure(2, 16, "fp32", False)
    lo = explorer.measure(2, 16, "fp32", False, method="lora")
    q = explorer.measure(2, 16, "fp32", False, method="qlora")
    adapters = 2 * 2 * 8 * (32 + 32)  # layers x (q, v) x r x (in + out)
    assert lo["trainable"] == q["trainable"] == adapters
    assert lo["gradients"] == q["gradients"] == 4 * adapters and lo["optimizer"] == 8 * adapters
    assert lo["weights"] == full["weights"] + 4 * adapters
    assert q["weights"] < lo["weights"]  # 4-bit linear layers
    assert lo["activations"] < full["activations"]  # frozen layers keep no inputs
    # the base passed in is never changed
    assert count_parameters(tiny_model).trainable == count_parameters(tiny_model).total


def test_optimizers_change_only_the_optimizer_state(explorer, tiny_model):
    adamw = explorer.measure(1, 8, "fp32", False, optimizer="adamw")
    sgd = explorer.measure(1, 8, "fp32", False, optimizer="sgd")
    assert sgd["optimizer"] == 0 and adamw["optimizer"] == 2 * adamw["gradients"]
    assert (sgd["weights"], sgd["gradients"], sgd["activations"]) == \
        (adamw["weights"], adamw["gradients"], adamw["activations"])
    if "adamw8bit" in widgets.available_optimizers():
        # bitsandbytes keeps fp32 state for tensors under 4096 elements: only the big ones shrink
        eight = explorer.measure(1, 8, "fp32", False, optimizer="adamw8bit")
        assert eight["optimizer"] < adamw["optimizer"]


def test_checkpointing_keeps_fewer_activations(explorer):
    assert explorer.measure(2, 32, "fp32", True)["activations"] < explorer.measure(2, 32, "fp32", False)["activations"] / 2


@pytest.mark.parametrize("kwargs, match", [({"method": "prefix"}, "method"), ({"optimizer": "lion"}, "optimizer")])
def test_bad_choices_are_refused(explorer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        explorer.measure(1, 8, "fp32", False, **kwargs)


def test_calculate_is_the_calculator(explorer):
    got = explorer.calculate("llama-2-7b", "qlora", 2, 512, "bf16", True)
    want = calculator.estimate("llama-2-7b", "qlora", batch_size=2, seq_len=512, gradient_checkpointing=True,
                               precision="mixed")
    assert got["total"] == want.total and got["weights"] == want.weights
    assert explorer.calculate("llama-2-7b", "full", 1, 512, "fp32", False)["optimizer"] == 8 * want.parameters
    with pytest.raises(ValueError, match="known models"):
        explorer.calculate("llama-9", "full", 1, 512, "fp32", False)


def test_update_keeps_the_last_bars(explorer):
    assert explorer.seq_len.options == (32, 64)  # no longer than the model's context
    explorer.seq_len.value, explorer.batch_size.value = 32, 1  # each change runs one measurement
    explorer.method.value = "lora"
    assert len(explorer.rows) == 2 and explorer.rows[-1]["method"] == "lora"
    assert "llama-2-7b" in explorer.status.value and "qlora" in explorer.status.value
