import copy

import pytest
import torch

from peftlab import adapters, data, lora, multitask
from peftlab.model import ModelConfig, Transformer
from peftlab.evaluate import evaluate_loss, exact_match, token_accuracy
from peftlab.explore.combine import CombineExplorer
from peftlab.train import train

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=256)
SQL, PY = data.sql_task(), data.python_task()
EVAL = {"sql": SQL["test"][:6], "python": PY["test"][:6]}


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


def add_lora(m, name):
    lora.add(m, r=4, alpha=8, targets=("q_proj", "v_proj"), name=name)


def randomize_B(model, name, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, lora.LoRALinear) and name in m.config:
                m.lora_B[name].copy_(torch.randn(m.lora_B[name].shape, generator=gen) * 0.5)


@pytest.fixture
def two_loras(model):
    add_lora(model, "sql")
    add_lora(model, "python")
    randomize_B(model, "sql", 1)
    randomize_B(model, "python", 2)
    return model


def lora_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}


# --- data ------------------------------------------------------------------------------------

def test_mixed_task_is_the_union_of_the_tasks_split_by_split():
    mixed = multitask.mixed_task()
    for split in ("train", "val", "test"):
        assert sorted(e.text for e in mixed[split]) == sorted(e.text for e in SQL[split] + PY[split])
        assert {e.meta["domain"] for e in mixed[split]} == {"sql", "python"}
    assert not {e.text for e in mixed["test"]} & {e.text for e in mixed["train"]}
    assert [e.text for e in multitask.mixed_task()["train"]] == [e.text for e in mixed["train"]]  # seeded
    assert [e.meta["domain"] for e in mixed["train"][:40]] != sorted(e.meta["domain"] for e in mixed["train"][:40])
    assert sorted(e.text for e in multitask.mixed_task(("python",))["test"]) == sorted(e.text for e in PY["test"])


def test_balanced_mixed_task_has_equal_domains_from_each_split():
    mixed = multitask.mixed_task(balanced=True)
    for split in ("train", "val", "test"):
        counts = {d: len(v) for d, v in multitask.by_domain(mixed[split]).items()}
        assert counts == {"sql": len(PY[split]), "python": len(PY[split])}  # Python is the smaller task
        assert {e.text for e in mixed[split]} <= {e.text for e in SQL[split] + PY[split]}
    with pytest.raises(TypeError, match="balanced"):
        multitask.mixed_task(balanced="yes")


@pytest.mark.parametrize("domains", ["sql", (), ("sql", "sql"), ("sql", "dna")])
def test_mixed_task_rejects_bad_domains(domains):
    with pytest.raises(ValueError, match="domains"):
        multitask.mixed_task(domains)


def test_by_domain_groups_and_needs_a_domain():
    groups = multitask.by_domain(multitask.mixed_task()["test"])
    assert {d: len(v) for d, v in groups.items()} == {"sql": len(SQL["test"]), "python": len(PY["test"])}
    with pytest.raises(ValueError, match="domain"):
        multitask.by_domain(data.qa_task()["test"][:2])


# --- scores ----------------------------------------------------------------------------------

def test_scores_by_domain_equal_the_metrics_on_each_group(model):
    mixed = EVAL["sql"] + EVAL["python"]
    loss = multitask.scores_by_domain(model, mixed, "loss")
    assert list(loss) == ["python", "sql"]
    assert loss["sql"] == pytest.approx(evaluate_loss(model, EVAL["sql"], loss_on="response"))
    assert loss["python"] == pytest.approx(evaluate_loss(model, EVAL["python"], loss_on="response"))
    em = multitask.scores_by_domain(model, mixed, "exact_match")
    assert em == {"python": exact_match(model, EVAL["python"]), "sql": exact_match(model, EVAL["sql"])}
    with pytest.raises(ValueError, match="metric"):
        multitask.scores_by_domain(model, mixed, "accuracy")
    with pytest.raises(ValueError, match="metric"):
        multitask.score(model, mixed, "bleu")


def test_token_accuracy_counts_response_tokens_teacher_forced(model):
    examples = EVAL["sql"][:3]
    tok_ids = [list(e.text.encode()) + [258] for e in examples]  # the response ends with EOS
    hits = total = 0
    with torch.no_grad():
        for e, ids in zip(examples, tok_ids):
            predicted = model(torch.tensor([ids]))[0].argmax(-1)
            start = len(e.prompt.encode())  # first response token
            for t in range(start, len(ids)):
                hits += int(predicted[t - 1] == ids[t])
                total += 1
    assert token_accuracy(model, examples) == pytest.approx(hits / total)
    assert multitask.score(model, examples, "token_accuracy") == pytest.approx(hits / total)
    with pytest.raises(ValueError, match="empty"):
        token_accuracy(model, [])


# --- stage 1: one adapter per task -----------------------------------------------------------

def test_train_adapters_equals_add_then_train_per_task(model):
    manual = copy.deepcopy(model)
    tasks = {"sql": SQL["train"], "python": PY["train"]}
    hist = multitask.train_adapters(model, tasks, add_lora, steps=3, lr=1e-2, batch_size=4, seed=0)
    torch.manual_seed(0)
    for name, examples in tasks.items():
        add_lora(manual, name)
        train(manual, examples, steps=3, lr=1e-2, batch_size=4, progress=False)
    assert lora.adapter_names(model) == ["sql", "python"] and hist["sql"].steps == 3
    state, expected = model.state_dict(), manual.state_dict()
    assert state.keys() == expected.keys()
    for k in state:
        assert torch.equal(state[k], expected[k]), k
    # each adapter moved, the base did not
    assert all(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)


def test_train_adapters_works_for_bottleneck_adapters(model):
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    multitask.train_adapters(model, {"sql": SQL["train"]}, lambda m, n: adapters.add(m, 4, name=n),
                             steps=2, lr=1e-2, batch_size=4)
    assert adapters.adapter_names(model) == ["sql"]
    for k, v in model.state_dict().items():
        if k.replace("mlp.base_layer.", "mlp.") in frozen and "adapters." not in k:
            assert torch.equal(v, frozen[k.replace("mlp.base_layer.", "mlp.")]), k


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(tasks={}), ValueError, "tasks"),
    (dict(tasks=[("sql", SQL["train"])]), ValueError, "tasks"),
    (dict(add="lora"), TypeError, "add"),
    (dict(steps=0), ValueError, "steps"),
    (dict(steps=2.0), ValueError, "steps"),
])
def test_train_adapters_bad_input_raises_before_any_change(model, kwargs, error, message):
    call = dict(tasks={"sql": SQL["train"]}, add=add_lora, steps=2)
    call.update(kwargs)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=message):
        multitask.train_adapters(model, call["tasks"], call["add"], steps=call["steps"], lr=1e-3)
    assert model.state_dict().keys() == before.keys() and not lora._wrappers(model)


# --- combining LoRA adapters -----------------------------------------------------------------

def test_combine_scores_cat_scores_the_exact_weighted_sum(two_loras):
    lora.set_active(two_loras, "python")
    before = lora_state(two_loras)
    r = multitask.combine_scores(two_loras, {"sql": 1.0, "python": 0.5}, EVAL, method="cat")
    # reference: the weighted sum of deltas folded into plain weights by hand
    ref = Transformer(CFG)
    ref.load_state_dict({k.replace(".base_layer", ""): v for k, v in two_loras.state_dict().items()
                         if "lora_" not in k})
    with torch.no_grad():
        for name, m in two_loras.named_modules():
            if isinstance(m, lora.LoRALinear):
                ref.get_submodule(name).weight += m.delta_weight("sql") + 0.5 * m.delta_weight("python")
    for k, v in EVAL.items():
        assert r["scores"][k] == pytest.approx(evaluate_loss(ref, v, loss_on="response"), abs=1e-5)
    assert r["r"] == 8 and r["parameters"] == 2 * 2 * 8 * (32 + 32) and r["max_error"] < 1e-6
    # the temporary adapter is gone, the adapters and the active one are as before
    assert lora.adapter_names(two_loras) == ["sql", "python"]
    assert all(m.active == "python" for m in lora._wrappers(two_loras).values())
    after = lora_state(two_loras)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_combine_scores_linear_has_cross_terms_svd_is_exact_at_full_rank(two_loras):
    linear = multitask.combine_scores(two_loras, {"sql": 1.0, "python": 1.0}, EVAL, method="linear")
    assert linear["r"] == 4 and linear["max_error"] > 0.1  # B1 A2 + B2 A1 is not zero
    low = multitask.combine_scores(two_loras, {"sql": 1.0, "python": 1.0}, EVAL, method="svd", rank=4)
    full = multitask.combine_scores(two_loras, {"sql": 1.0, "python": 1.0}, EVAL, method="svd", rank=8)
    assert low["r"] == 4 and low["max_error"] > 0.01 and full["max_error"] < 1e-6


def test_combine_scores_with_zero_weight_is_the_single_adapter(two_loras):
    r = multitask.combine_scores(two_loras, {"sql": 1.0, "python": 0.0}, EVAL, method="cat", metric="exact_match")
    lora.set_active(two_loras, "sql")
    assert r["scores"] == {k: exact_match(two_loras, v) for k, v in EVAL.items()}


@pytest.mark.parametrize("kwargs, message", [
    (dict(eval_sets={}), "eval_sets"),
    (dict(metric="bleu"), "metric"),
    (dict(method="ties"), "method"),
    (dict(weights={"nope": 1.0}), "weights"),
    (dict(method="svd"), "rank"),
    (dict(name="sql"), "in use"),
])
def test_combine_scores_bad_input_raises_before_any_change(two_loras, kwargs, message):
    call = dict(weights={"sql": 1.0, "python": 1.0}, eval_sets=EVAL, method="cat")
    call.update(kwargs)
    before = lora_state(two_loras)
    with pytest.raises((ValueError, TypeError), match=message):
        multitask.combine_scores(two_loras, **call)
    after = lora_state(two_loras)
    assert after.keys() == before.keys() and lora.adapter_names(two_loras) == ["sql", "python"]


def test_combine_explorer_end_points_are_the_single_adapters(two_loras):
    ex = CombineExplorer(two_loras, EVAL)
    assert set(ex.reference) == {"sql", "python", "base"}
    for t, name in ((0.0, "sql"), (1.0, "python")):
        row = ex.measure(t, "cat")
        for task in EVAL:
            assert row[task] == pytest.approx(ex.reference[name][task], abs=1e-5)
    with lora.disabled(two_loras):
        assert ex.reference["base"]["sql"] == pytest.approx(evaluate_loss(two_loras, EVAL["sql"], loss_on="response"))
    half = ex.measure(0.5, "svd")
    assert half["r"] == 8 and half["method"] == "svd"
    with pytest.raises(ValueError, match="t must be"):
        ex.measure(1.5, "cat")
    with pytest.raises(ValueError, match="eval_sets"):
        CombineExplorer(two_loras, {"sql": EVAL["sql"], "qa": EVAL["sql"]})


# --- AdapterFusion weights -------------------------------------------------------------------

@pytest.fixture
def fused(model):
    for name, seed in (("sql", 1), ("python", 2)):
        adapters.add(model, 8, name=name)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for w in adapters._wrappers(model):
                for p in w.adapters[name].parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    adapters.add_fusion(model, ["sql", "python"])
    return model


def test_fusion_weights_for_is_one_unpadded_forward(fused):
    text = EVAL["sql"][0].text
    w = multitask.fusion_weights_for(fused, text)
    ids = torch.tensor([list(text.encode())])
    torch.testing.assert_close(w, adapters.fusion_weights(fused, ids)[:, 0])
    assert w.shape == (2, len(text.encode()), 2)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, len(text.encode())))
    with pytest.raises(ValueError, match="text"):
        multitask.fusion_weights_for(fused, "")


def test_mean_fusion_weights_average_over_tokens_and_layers(fused):
    examples = EVAL["sql"][:3] + EVAL["python"][:2]
    means = multitask.mean_fusion_weights(fused, examples)
    assert list(means) == ["python", "sql"]
    tokens = torch.cat([multitask.fusion_weights_for(fused, e.text).flatten(0, 1) for e in EVAL["sql"][:3]])
    assert means["sql"] == pytest.approx(tokens.double().mean(0).tolist())
    assert sum(means["python"]) == pytest.approx(1.0)
    assert means["sql"] != means["python"]


def test_merge_adapters_cat_is_the_sum_and_peft_merges_run():
    """merge_adapters joins adapters trained on separate copies of one base: cat gives the exact weighted sum
    of the updates, a PEFT merge that prunes nothing (DARE at density 1, on Delta W) gives the same model,
    and neither changes its inputs; a bad kind or weight over an unknown adapter is refused."""
    pytest.importorskip("peft")
    from peftlab.multitask import merge_adapters

    torch.manual_seed(0)
    base = Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64))
    adapted = {}
    for i, name in enumerate(("a", "b")):
        torch.manual_seed(i)
        adapted[name] = lora.randomize_B(lora.add(copy.deepcopy(base), r=2, targets="all-linear"), seed=i)
    before = {k: v.clone() for k, v in adapted["a"].state_dict().items()}
    ids = torch.randint(0, 256, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cat = merge_adapters(base, adapted, {"a": 1.0, "b": -0.5}, "cat")
        peft_sum = merge_adapters(base, adapted, {"a": 1.0, "b": -0.5}, "dare_linear_svd", density=1.0, rank=4)
        assert (cat(ids) - peft_sum(ids)).abs().max() < 1e-4
        lora.set_active(cat, "a")
        assert torch.equal(cat(ids), adapted["a"](ids))  # the loaded adapter is the trained one
    assert all(torch.equal(v, adapted["a"].state_dict()[k]) for k, v in before.items())
    with pytest.raises(ValueError, match="kind must be one of"):
        merge_adapters(base, adapted, {"a": 1.0}, "blend")
    with pytest.raises(ValueError, match="weights must be a non-empty mapping over the adapted models"):
        merge_adapters(base, adapted, {"c": 1.0}, "cat")
