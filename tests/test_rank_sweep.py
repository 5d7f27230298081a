import math
import threading
import time

import pytest
import torch

from peftlab import lora
from peftlab.model import ModelConfig, Transformer
from peftlab.explore.rank import RankSweep
from peftlab.rank_sweep import check_settings, subspace_similarity, sweep

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=128)
D, FF, L = CFG.d_model, CFG.d_ff, CFG.n_layers


@pytest.fixture
def small() -> Transformer:
    """A random small model: the sweep's bookkeeping does not need the pretrained one."""
    torch.manual_seed(0)
    return Transformer(CFG).eval()


# r * (in + out) per adapted layer, summed by hand from the config
CLOSED_FORM = {
    "q_proj,v_proj": lambda r: L * 2 * r * (D + D),
    "all attention": lambda r: L * 4 * r * (D + D),
    "all MLP": lambda r: L * r * (2 * (D + FF) + (FF + D)),
    "all-linear": lambda r: L * r * (4 * (D + D) + 2 * (D + FF) + (FF + D)),
}


@pytest.mark.parametrize("targets", list(CLOSED_FORM))
def test_trainable_parameters_equal_closed_form(small, targets):
    rows = sweep([1, 4, 64], "alpha/r", targets, steps=1, base=small, evaluate=False)
    total = sum(p.numel() for p in small.parameters())
    for row in rows:
        expected = CLOSED_FORM[targets](row["rank"])
        assert row["trainable"] == row["closed_form"] == expected
        assert row["percent"] == pytest.approx(100 * expected / (total + expected))


def test_adapter_file_grows_with_r_by_four_bytes_per_parameter(small):
    rows = sweep([1, 2, 8, 32], steps=1, base=small, evaluate=False)
    kb = [row["adapter_kb"] for row in rows]
    assert kb == sorted(kb) and len(set(kb)) == len(kb)
    # fp32 weights: 4 bytes per parameter; the JSON config and safetensors header barely change
    added_bytes = 1024 * (kb[-1] - kb[0])
    assert abs(added_bytes - 4 * (rows[-1]["trainable"] - rows[0]["trainable"])) < 256


def test_rows_hold_numbers_in_range(small):
    rows = sweep([2, 8], "alpha/sqrt(r)", "all attention", steps=6, base=small)
    for row in rows:
        assert len(row["loss"]) == 6 and all(math.isfinite(x) and x > 0 for x in row["loss"])
        assert row["final_loss"] == pytest.approx(sum(row["loss"][-5:]) / 5)
        assert 0 < row["test_loss"] < 20 and 0.0 <= row["accuracy"] <= 1.0
        assert row["step_ms"] > 0 and 0 < row["percent"] < 100


def test_base_is_untouched_and_runs_repeat_exactly(small):
    state = {k: v.clone() for k, v in small.state_dict().items()}
    first = sweep([4], steps=4, base=small, evaluate=False)
    again = sweep([4], steps=4, base=small, evaluate=False)
    assert first[0]["loss"] == again[0]["loss"]
    assert not any(isinstance(m, lora.LoRALinear) for m in small.modules())
    assert all(torch.equal(v, state[k]) for k, v in small.state_dict().items())


@pytest.mark.parametrize("scaling, factor", [("alpha/r", lambda r: 16 / r), ("alpha/sqrt(r)", lambda r: 16 / r ** 0.5)])
def test_scaling_rule_reaches_the_adapter(small, scaling, factor):
    rows = sweep([4, 16], scaling, steps=1, base=small, evaluate=False, keep_models=True)
    for row in rows:
        layer = row["model"].layers[0].self_attn.q_proj
        assert layer.config["default"].scaling == pytest.approx(factor(row["rank"]))


def test_stop_during_a_rank_ends_the_sweep(small):
    stop, seen = threading.Event(), []

    def on_step(r, step, loss):
        seen.append((r, step))
        if step == 3:
            stop.set()

    rows = sweep([1, 2, 4], steps=50, base=small, evaluate=False, on_step=on_step, stop=stop)
    assert rows == [] and seen == [(1, 1), (1, 2), (1, 3)]


def test_stop_between_ranks_keeps_finished_rows(small):
    stop = threading.Event()
    rows = sweep([1, 2, 4], steps=3, base=small, evaluate=False, on_result=lambda row: stop.set(), stop=stop)
    assert [row["rank"] for row in rows] == [1]


@pytest.mark.parametrize("kwargs, error, words", [
    ({"ranks": []}, ValueError, "empty"),
    ({"ranks": [0, 4]}, ValueError, "1..64"),
    ({"ranks": [4, 65]}, ValueError, "1..64"),
    ({"ranks": [2.0]}, TypeError, "ints"),
    ({"ranks": "8"}, TypeError, "list of ints"),
    ({"scaling": "alpha/r^2"}, ValueError, "alpha/sqrt(r)"),
    ({"targets": "everything"}, ValueError, "all-linear"),
    ({"targets": "q_proj,lm_head"}, ValueError, "q_proj"),
    ({"steps": 0}, ValueError, "steps"),
    ({"lr": -1e-3}, ValueError, "lr"),
    ({"task": "poetry"}, ValueError, "task"),
])
def test_bad_settings_are_rejected_before_training(small, kwargs, error, words):
    settings = {"ranks": [4], "scaling": "alpha/r", "targets": "q_proj,v_proj", "steps": 2, "lr": 1e-3, **kwargs}
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        check_settings(**settings)
    called = []
    with pytest.raises(error):
        sweep(**settings, base=small, on_step=lambda *a: called.append(a))
    assert called == []


def test_settings_are_normalised():
    s = check_settings([16, 1, 16], "alpha/sqrt(r)", "q_proj, k_proj", steps=3, lr=1e-3)
    assert s["ranks"] == (1, 16) and s["targets"] == ("q_proj", "k_proj")
    assert check_settings([8], "alpha/r", "all-linear", 1, 1e-3)["targets"] == lora.ALL_LINEAR


# --- subspace similarity (LoRA paper, section 7) ---------------------------------------------

def test_subspace_similarity_bounds_and_special_cases():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 64, generator=g)
    torch.testing.assert_close(subspace_similarity(A, A), torch.ones(4, 4), rtol=0, atol=1e-5)
    # a rank-16 matrix whose rows contain A's rows: its full span contains A's, phi(i, 16) = 1
    phi = subspace_similarity(A, torch.cat([A, torch.randn(12, 64, generator=g)]))
    assert phi.shape == (4, 16) and ((phi >= 0) & (phi <= 1 + 1e-6)).all()
    torch.testing.assert_close(phi[:, -1], torch.ones(4), rtol=0, atol=1e-5)
    # orthonormal directions q_0..q_15: the small A spans q_0..q_3 (in that order of singular value),
    # the large one has q_4..q_15 on top and q_0..q_3 last, so phi(i, j) = max(0, min(i, j - 12)) / min(i, j)
    Q = torch.linalg.qr(torch.randn(64, 16, generator=g)).Q.T  # (16, 64), orthonormal rows
    small = torch.tensor([4.0, 3, 2, 1])[:, None] * Q[:4]
    large = torch.arange(16, 0, -1.0)[:, None] * torch.cat([Q[4:], Q[:4]])
    i, j = torch.arange(1, 5.0)[:, None], torch.arange(1, 17.0)[None, :]
    expected = (torch.minimum(i, j - 12).clamp(min=0) / torch.minimum(i, j))
    torch.testing.assert_close(subspace_similarity(small, large), expected, rtol=0, atol=1e-5)


def test_subspace_similarity_of_random_matrices_is_near_its_expectation():
    # random i- and j-dimensional subspaces of R^k overlap by i*j/k in expectation: phi ~ max(i, j)/k
    g = torch.Generator().manual_seed(1)
    k = 512
    phis = torch.stack([subspace_similarity(torch.randn(8, k, generator=g), torch.randn(64, k, generator=g))
                        for _ in range(20)]).mean(0)
    assert phis[0, 0].item() == pytest.approx(1 / k, rel=0.8)
    assert phis[7, 63].item() == pytest.approx(64 / k, rel=0.1)


def test_subspace_similarity_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same in"):
        subspace_similarity(torch.randn(4, 32), torch.randn(8, 16))


# --- the widget, without a browser -----------------------------------------------------------

def test_widget_runs_the_chosen_ranks_and_draws(small):
    w = RankSweep(small, ranks=(1, 2), steps=5)
    w.scaling.value = "alpha/sqrt(r)"
    w.start()
    w.join(timeout=60)
    assert not w.running and w.error is None and not w.stopped
    assert [row["rank"] for row in w.rows] == [1, 2] and all(row["scaling"] == "alpha/sqrt(r)" for row in w.rows)
    assert {r: len(c) for r, c in w.curves.items()} == {1: 5, 2: 5}
    assert w.table_html().count("<tr>") == 3 and "done" in w.status.value
    assert w.plot.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert not w.run_button.disabled and w.stop_button.disabled


def test_widget_stop_ends_a_running_sweep_early(small):
    w = RankSweep(small, ranks=(1, 2, 4), steps=300, redraw_every=1000)
    w.start()
    assert w.running and w.run_button.disabled and not w.stop_button.disabled
    deadline = time.monotonic() + 30
    while not w.curves.get(1) and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop_button.click()
    w.join(timeout=30)
    assert not w.running and w.stopped and w.rows == []
    assert sum(len(c) for c in w.curves.values()) < 300
    assert "stopped" in w.status.value and not w.run_button.disabled


def test_widget_refuses_bad_settings_without_starting(small):
    w = RankSweep(small)
    w.ranks.value = ()
    w.run_button.click()
    assert not w.running and w._thread is None and "ranks is empty" in w.status.value


def test_widget_status_counts_the_runs_steps_not_the_moved_slider(small):
    w = RankSweep(small, ranks=(1,), steps=10, redraw_every=1)
    w.start()
    w.steps.value = 175  # moved while the sweep runs
    w.join(timeout=60)
    seen = w.run_settings["steps"]
    assert seen == 10 and w.error is None
    w._on_step(1, 10, 1.0)  # the status a step of this run writes
    assert "step 10/10" in w.status.value


def test_widget_says_when_a_rank_diverges(small):
    w = RankSweep(small, ranks=(1,), steps=5)
    w._on_step(1, 3, float("nan"))
    assert "r=1 diverged</b> at step 3" in w.status.value and "lower the learning rate" in w.status.value
    w._on_step(1, 4, float("nan"))
    assert "at step 3" in w.status.value and w.diverged == {1: 3}
