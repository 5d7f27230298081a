import threading

import pytest
import torch

from peftlab import data, lora
from peftlab.data import Example
from peftlab.measure import count_parameters
from peftlab.evaluate import greedy_accuracy
from peftlab.forgetting import (Curve, Method, Probe, accuracy_at, best_accuracy_at, effective_rank, fact_subset,
                              lowest_loss, matched, matched_levels, run, tune_lr, verdict,
                              weight_delta)

DOMAIN = ["ACGTTGCA|TGCAACGT", "GGCATTAC|GTAATGCC", "TTAGCCGA|TCGGCTAA", "CAGTACGT|ACGTACTG"] * 4
OLD = [Example("Tom lives in", " Varn."), Example("Ann has a pet", " cat.")]


def pts(*pairs):
    return [{"domain_loss": x, "old_accuracy": y} for x, y in pairs]


# --- Method ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, param", [({"kind": "prefix"}, "kind"), ({"kind": "lora", "r": 0}, "r"),
                                           ({"kind": "lora", "r": 2.0}, "r"), ({"kind": "lora", "alpha": -1}, "alpha")])
def test_method_rejects_bad_input(kwargs, param):
    with pytest.raises(ValueError, match=param):
        Method(**kwargs)


def test_method_labels():
    assert Method().label == "full FT"
    assert Method("lora", r=64).label == "LoRA r=64 all-linear"
    assert Method("lora", r=1, targets=("q_proj", "v_proj")).label == "LoRA r=1 q,v"


def test_prepare_full_copies_and_trains_everything(tiny_model):
    tiny_model.requires_grad_(False)
    model = Method("full").prepare(tiny_model)
    assert model is not tiny_model
    assert count_parameters(model).trainable == count_parameters(tiny_model).total
    assert count_parameters(tiny_model).trainable == 0  # the base is untouched


def test_prepare_lora_uses_alpha_2r_on_all_linear(tiny_model):
    model = Method("lora", r=4).prepare(tiny_model)
    layers = [m for m in model.modules() if isinstance(m, lora.LoRALinear)]
    assert len(layers) == 7 * tiny_model.config.n_layers  # q k v o gate up down per block, not lm_head
    assert all(m.config["default"].scaling == 2.0 for m in layers)  # alpha / r = 2 r / r
    assert count_parameters(model).trainable == sum(4 * (m.in_features + m.out_features) for m in layers)
    assert lora.adapter_names(tiny_model) == []  # the base got no adapter
    x = torch.randint(0, 256, (2, 9))
    torch.testing.assert_close(model(x), tiny_model(x))  # B = 0: unchanged at init


# --- interpolation along curves and the matched comparison --------------------------------------

def test_accuracy_at_interpolates_the_first_crossing():
    curve = pts((3.0, 1.0), (2.0, 0.8), (1.0, 0.4), (1.5, 0.9))
    assert accuracy_at(curve, 2.5) == pytest.approx(0.9)
    assert accuracy_at(curve, 1.2) == pytest.approx(0.48)  # between (2.0, 0.8) and (1.0, 0.4)
    assert accuracy_at(curve, 3.5) == 1.0  # already there at the start
    assert accuracy_at(curve, 0.5) is None  # never reached
    with pytest.raises(ValueError, match="points"):
        accuracy_at([], 1.0)


def test_best_accuracy_and_lowest_loss_over_learning_rates():
    slow = Curve(Method(), 1e-5, pts((3.0, 1.0), (2.0, 0.9)))
    fast = Curve(Method(), 1e-3, pts((3.0, 1.0), (1.0, 0.2)))
    assert best_accuracy_at([slow, fast], 2.0) == pytest.approx(0.9)
    assert best_accuracy_at([slow, fast], 1.5) == pytest.approx(0.4)  # only `fast` gets there
    assert best_accuracy_at([slow, fast], 0.5) is None
    assert lowest_loss([slow, fast]) == 1.0


def test_matched_levels_lie_where_every_method_reaches():
    full = [Curve(Method(), 1e-4, pts((4.0, 1.0), (1.0, 0.0)))]
    lora_ = [Curve(Method("lora"), 1e-3, pts((4.0, 1.0), (2.0, 0.5)))]
    assert matched_levels([full, lora_], n=3, span=1.5) == pytest.approx([2.0, 2.5, 3.0])
    assert matched_levels([full, lora_], n=2, span=10) == pytest.approx([2.0, 4.0])  # capped at the start
    rows = matched({"full": full, "lora": lora_}, n=3, span=1.5)
    assert [r["full"] for r in rows] == pytest.approx([1 / 3, 0.5, 2 / 3])  # (L - 1) / 3 along full's line
    assert [r["lora"] for r in rows] == pytest.approx([0.5, 0.625, 0.75])
    for bad, param in [({"n": 1}, "n"), ({"span": 1.0}, "span")]:
        with pytest.raises(ValueError, match=param):
            matched_levels([full, lora_], **bad)
    with pytest.raises(ValueError, match="groups"):
        matched_levels([full])


def test_verdict_follows_the_sign_of_the_gap():
    rows = [{"domain_loss": 1.0, "A": 0.9, "B": 0.5}, {"domain_loss": 2.0, "A": 1.0, "B": 0.8}]
    gap, text = verdict(rows, "A", "B")
    assert gap == pytest.approx(0.3) and text == "A forgets less at matched domain loss"
    assert verdict(rows, "B", "A")[1] == "A forgets less at matched domain loss"
    even = [{"domain_loss": 1.0, "A": 0.80, "B": 0.79}]
    assert verdict(even, "A", "B")[1] == "A and B forget about equally at matched domain loss"


# --- one run, probed along the way ---------------------------------------------------------------

def test_run_probes_step_zero_every_k_and_the_last_step(tiny_model):
    probe = Probe(DOMAIN[:4], OLD)
    start = probe(tiny_model)
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    curve = run(tiny_model, Method("full"), DOMAIN, probe, lr=3e-3, steps=5, every=2, batch_size=4, keep_model=True)
    assert [p["step"] for p in curve.points] == [0, 2, 4, 5]
    assert curve.points[0] == {"step": 0, **start}
    assert curve.final["domain_loss"] < start["domain_loss"]  # it learned the domain
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in state.items())  # base untouched
    assert curve.model is not None and curve.label == "full FT, lr 0.003"
    again = run(tiny_model, Method("lora", r=2), DOMAIN, probe, lr=1e-3, steps=2, every=5, start=start)
    assert again.model is None and again.points[0] == curve.points[0]  # step 0 is the base, measured once


@pytest.mark.parametrize("kwargs, param", [({"every": 0}, "every"), ({"steps": 0}, "steps"), ({"lr": 0.0}, "lr")])
def test_run_rejects_bad_input(tiny_model, kwargs, param):
    args = {"lr": 1e-3, "steps": 2, "every": 1, **kwargs}
    with pytest.raises(ValueError, match=param):
        run(tiny_model, Method(), DOMAIN, Probe(DOMAIN, OLD), **args)


def test_tune_lr_picks_the_best_final_value(tiny_model):
    probe = Probe(DOMAIN[:4], OLD)
    best, losses = tune_lr(tiny_model, Method("full"), DOMAIN, probe, [1e-6, 3e-3], steps=6, batch_size=4)
    assert best == 3e-3 and losses[3e-3] < losses[1e-6]  # a near-zero lr barely moves the loss
    single = run(tiny_model, Method("full"), DOMAIN, probe, lr=3e-3, steps=6, every=6, batch_size=4)
    assert losses[3e-3] == single.final["domain_loss"]  # the same run as `run` does
    worst, _ = tune_lr(tiny_model, Method("full"), DOMAIN, probe, [1e-6, 3e-3], steps=6, batch_size=4, minimize=False)
    assert worst == 1e-6
    with pytest.raises(ValueError, match="lrs"):
        tune_lr(tiny_model, Method(), DOMAIN, probe, [], steps=2)
    with pytest.raises(ValueError, match="key"):
        tune_lr(tiny_model, Method(), DOMAIN, probe, [1e-3], steps=2, key="accuracy")


def test_probe_keeps_the_training_mode(tiny_model):
    tiny_model.train()
    Probe(DOMAIN[:2], OLD)(tiny_model)
    assert tiny_model.training


def test_fact_subset_is_fixed_and_drawn_from_the_facts():
    a, b = fact_subset(120), fact_subset(120)
    facts = data.fact_completion()
    assert a == b and len(set(a)) == 120 and set(a) <= set(facts)
    assert fact_subset(120, seed=1) != a
    assert {e.meta["attribute"] for e in a} == {"city", "job", "pet", "color"}
    for bad in (0, 481, 1.5):
        with pytest.raises(ValueError, match="n must"):
            fact_subset(bad)


# --- the rank of the update --------------------------------------------------------------------

def test_effective_rank_counts_singular_values_to_the_variance_share():
    assert effective_rank(torch.eye(10)) == 9  # each value explains 10%
    assert effective_rank(torch.eye(10), variance=1.0) == 10
    assert effective_rank(torch.diag(torch.tensor([3.0, 1.0]))) == 1  # 9 / 10
    assert effective_rank(torch.zeros(4, 4)) == 0
    low = torch.randn(50, 3, generator=torch.Generator().manual_seed(0)) @ torch.randn(3, 40)
    assert effective_rank(low, variance=1.0) == 3
    with pytest.raises(ValueError, match="variance"):
        effective_rank(torch.eye(3), variance=0)
    with pytest.raises(ValueError, match="2-D"):
        effective_rank(torch.ones(3))


def test_weight_delta_full_and_lora(tiny_model):
    name = "layers.0.self_attn.q_proj"
    full = Method("full").prepare(tiny_model)
    with torch.no_grad():
        full.get_submodule(name).weight += 0.5
    torch.testing.assert_close(weight_delta(full, tiny_model, name), torch.full((32, 32), 0.5))

    adapted = run(tiny_model, Method("lora", r=2), DOMAIN, Probe(DOMAIN[:2], OLD), lr=1e-2, steps=3, every=3,
                  batch_size=4, keep_model=True).model
    layer = adapted.get_submodule(name)
    delta = weight_delta(adapted, tiny_model, name)
    torch.testing.assert_close(delta, 2.0 * layer.lora_B["default"] @ layer.lora_A["default"])
    assert 1 <= effective_rank(delta, variance=1.0) <= 2
    lora.merge(adapted)
    with pytest.raises(ValueError, match="merged"):
        weight_delta(adapted, tiny_model, name)


# --- the explorer's logic, without a browser -----------------------------------------------------

def test_explorer_adds_one_curve_per_press(tiny_model):
    import matplotlib
    matplotlib.use("Agg")
    from peftlab.explore.forgetting import TradeoffExplorer

    ex = TradeoffExplorer(tiny_model, probe=Probe(DOMAIN[:2], OLD), train_data=DOMAIN, batch_size=4, probes_per_run=2)
    c = ex.add("lora", r=2, targets="q,v", lr=1e-3, steps=4)
    assert ex.curves == [c] and c.method == Method("lora", r=2, targets=("q_proj", "v_proj"))
    assert [p["step"] for p in c.points] == [0, 2, 4]
    ex.kind.value, ex.steps.value = "full", 25
    ex.button.click()  # trains on a worker thread
    ex.join(120)
    assert ex.error is None and ex.curves[-1].method.kind == "full" and len(ex.curves) == 2
    assert ex.status.value.startswith("<b>full FT") and ex.plot.value[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="targets"):
        ex.add("lora", r=2, targets="mlp", lr=1e-3, steps=1)
    assert len(ex.curves) == 2
    ex.reset()
    assert ex.curves == []


def test_explorer_shows_at_once_and_trains_pending_runs_on_a_worker(tiny_model, monkeypatch):
    from peftlab.explore import forgetting as explore
    gate = threading.Event()
    real = explore.run

    def slow_run(*args, **kwargs):
        assert gate.wait(30)
        return real(*args, **kwargs)
    monkeypatch.setattr(explore, "run", slow_run)
    monkeypatch.setattr(explore, "display", lambda *a: None)
    reference = {"kind": "full", "r": 8, "targets": "q,v", "lr": 1e-3, "steps": 4}
    ex = explore.TradeoffExplorer(tiny_model, probe=Probe(DOMAIN[:2], OLD), train_data=DOMAIN, batch_size=4,
                                  probes_per_run=2, pending=[reference])
    ex.show()  # returns while the reference still waits to train
    assert ex.running and ex.curves == [] and ex.status.value.startswith("training <b>full FT")
    ex.button.click()  # ignored while a run trains
    gate.set()
    ex.join(120)
    assert not ex.running and [c.method.kind for c in ex.curves] == ["full"] and not ex.button.disabled


def test_plot_curves_draws_one_line_per_curve():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from peftlab.explore.forgetting import plot_curves

    curves = [Curve(Method(), lr, pts((3.0, 1.0), (1.0, 0.5))) for lr in (1e-4, 1e-3)]
    curves.append(Curve(Method("lora"), 1e-3, pts((3.0, 1.0), (2.0, 0.9))))
    fig, ax = plt.subplots()
    plot_curves(ax, curves, base_accuracy=1.0)
    assert len(ax.get_lines()) == 4  # three curves and the base line
    assert ax.xaxis_inverted()
    colours = [line.get_color() for line in ax.get_lines()[:3]]
    assert colours[0] == colours[1] != colours[2]  # one colour per method
    plt.close(fig)


def test_greedy_accuracy_equals_exact_match(base):
    from peftlab import exact_match
    from peftlab.train import train

    facts = data.fact_completion()[::4]  # 120 facts, every attribute
    assert greedy_accuracy(base, facts) == exact_match(base, facts)
    train(base, data.dna_task()["train"], steps=3, lr=1e-3, batch_size=4, progress=False)  # forgets some
    acc = greedy_accuracy(base, facts)
    assert acc == exact_match(base, facts) and 0 < acc < 1
    qa = data.qa_task()["test"][:40]  # responses that end in "\n", not in a letter
    assert greedy_accuracy(base, qa) == exact_match(base, qa)
    with pytest.raises(ValueError, match="examples"):
        greedy_accuracy(base, [])
