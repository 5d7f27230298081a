"""MemoryExplorer's logic, without a browser: what it measures and what it calculates, and how it
answers a burst of changes (debounced, measured on a worker, stale results dropped)."""

import threading
import time

import pytest

from peftlab import calculator
from peftlab.explore import memory as widgets
from peftlab.measure import count_parameters


@pytest.fixture
def explorer(tiny_model):
    return widgets.MemoryExplorer(tiny_model, max_bars=2, debounce=0.1)


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
    explorer.seq_len.value = 32
    assert explorer.wait()
    explorer.method.value = "lora"
    assert explorer.wait()
    explorer.batch_size.value = 1
    assert explorer.wait()
    assert len(explorer.rows) == 2 and explorer.rows[-1]["method"] == "lora"  # max_bars=2
    assert explorer.status.value.startswith("<b>lora adamw b1 s32 fp32</b>: total")
    assert "llama-2-7b" in explorer.large_status.value and "qlora" in explorer.large_status.value
    assert explorer.plot.value[:4] == b"\x89PNG" and explorer.large_plot.value[:4] == b"\x89PNG"


def counting(explorer, monkeypatch, gate: threading.Event | None = None) -> list[dict]:
    """Record every `measure` call; with `gate`, the first call waits for it (a slow measurement)."""
    calls, real = [], explorer.measure

    def measure(**settings):
        calls.append(settings)
        if gate is not None and len(calls) == 1:
            assert gate.wait(30)
        return real(**settings)
    monkeypatch.setattr(explorer, "measure", measure)
    return calls


def test_a_burst_of_changes_is_measured_once(explorer, monkeypatch):
    calls = counting(explorer, monkeypatch)
    explorer.debounce = 3.0  # far longer than the gap between two changes, even on a loaded machine
    for size in (1, 2, 4, 8, 2):  # each change redraws the large-model plot, a fraction of a second
        explorer.batch_size.value = size
    explorer.method.value = "lora"
    assert explorer.wait()
    assert calls == [explorer.settings()] and explorer.settings()["batch_size"] == 2
    assert [r["label"] for r in explorer.rows] == ["lora adamw\nb2 s64\nfp32"]


def test_a_result_for_old_controls_is_dropped(explorer, monkeypatch):
    gate = threading.Event()
    calls = counting(explorer, monkeypatch, gate)
    explorer.batch_size.value = 1
    deadline = time.monotonic() + 30
    while not calls and time.monotonic() < deadline:  # the slow first measurement has started
        time.sleep(0.01)
    explorer.batch_size.value = 2  # the controls move on while it runs
    assert "measuring <b>full adamw b2 s64" in explorer.status.value
    gate.set()
    assert explorer.wait()
    assert [c["batch_size"] for c in calls] == [1, 2]
    assert (explorer.measured, explorer.dropped) == (2, 1)
    assert [r["label"] for r in explorer.rows] == ["full adamw\nb2 s64\nfp32"]  # never the b1 result
    assert explorer.status.value.startswith("<b>full adamw b2 s64 fp32</b>")


def test_the_large_model_controls_only_recalculate(explorer, monkeypatch):
    calls = counting(explorer, monkeypatch)
    before = explorer.large_plot.value
    explorer.large_model.value = "llama-2-13b"
    explorer.large_seq_len.value = 512
    assert explorer.wait() and calls == []  # nothing measured again
    assert explorer.large_status.value.startswith("llama-2-13b, seq 512, calculated: full ")
    assert explorer.large_plot.value != before


def test_a_failed_measurement_is_shown(explorer, monkeypatch):
    def broken(**settings):
        raise RuntimeError("out of memory")
    monkeypatch.setattr(explorer, "measure", broken)
    explorer.batch_size.value = 1
    assert explorer.wait()
    assert explorer.status.value == "<b>error:</b> RuntimeError: out of memory" and explorer.rows == []
