"""The benchmark's table logic on a tiny model: structure and ratio math, never timing thresholds."""

import copy
import itertools

import pytest
import torch

from peftlab import bench, lora, measure
from peftlab.measure import count_parameters
from peftlab.model import ModelConfig, Transformer

CFG = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=32)
BATCH = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
PEFTLAB_ROWS = ["trainable parameters: LoRA r=8 q,v / full", "trainable parameters: LoRA r=8 all-linear / full",
                "train step: LoRA q,v / full fine-tuning", "train step: LoRA all-linear / full fine-tuning"]
INFERENCE_ROWS = ["inference: merged / base", "inference: unmerged / base"]
PEFT_ROWS = ["train step: peftlab / PEFT (same HF Llama)", "train step: peftlab (own model) / PEFT (HF Llama)",
             "train memory: peftlab / PEFT (same HF Llama)", "train memory: peftlab (own model) / PEFT (HF Llama)"]


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(CFG).eval()


# --- rows and the table ------------------------------------------------------------------------

def test_ratio_row_divides_and_judges_against_the_limit():
    r = bench.ratio_row("x", 0.03, 0.04, bench.ms, limit=0.8)
    assert (r.numerator, r.denominator, r.target) == ("30.0 ms", "40.0 ms", "<= 0.8")
    assert r.ratio == pytest.approx(0.75) and r.verdict == "PASS"
    assert bench.ratio_row("x", 0.8, 1.0, bench.ms, limit=0.8).verdict == "PASS"  # the limit itself passes
    assert bench.ratio_row("x", 0.81, 1.0, bench.ms, limit=0.8).verdict == "FAIL"
    unjudged = bench.ratio_row("x", 5, 2, bench.count)
    assert (unjudged.ratio, unjudged.target, unjudged.verdict) == (2.5, "", "")


@pytest.mark.parametrize("denominator, limit, match", [(0.0, None, "denominator"), (-1.0, None, "denominator"),
                                                       (1.0, 0.0, "limit")])
def test_ratio_row_rejects_bad_input(denominator, limit, match):
    with pytest.raises(ValueError, match=match):
        bench.ratio_row("x", 1.0, denominator, bench.ms, limit=limit)


def test_formatters():
    assert bench.ms(0.0123) == "12.3 ms"
    assert bench.count(3297024) == "3,297,024"
    assert bench.mib(3 * 2**20) == "3.00 MiB"
    assert bench.format_ratio(0.5) == "0.500"
    assert bench.format_ratio(0.01) == "0.0100 (1/100)"


def test_format_table_has_a_line_per_row_and_counts_targets_met():
    rows = [bench.ratio_row("a", 1, 2, bench.count, limit=1.0), bench.ratio_row("b", 3, 2, bench.count, limit=1.0),
            bench.ratio_row("c", 1, 4, bench.count)]
    lines = bench.format_table(rows, title="T").splitlines()
    assert lines[0] == "T" and lines[1].split(" | ")[0].strip() == "quantity"
    assert len(lines) == 1 + 2 + len(rows) + 1
    cells = [[c.strip() for c in line.split("|")] for line in lines[3:6]]
    assert [c[3:] for c in cells] == [["0.500", "<= 1", "PASS"], ["1.500", "<= 1", "FAIL"], ["0.250", "", ""]]
    assert lines[-1] == "1 of 2 targets met"
    assert len({line.index("|") for line in lines[1:-1]}) == 1  # columns aligned


# --- interleaving ------------------------------------------------------------------------------

def test_interleaved_times_alternates_the_order_and_takes_medians(monkeypatch):
    calls, fake_seconds = [], itertools.count(1)

    def fake_time_step(fn, warmup, repeats):
        assert (warmup, repeats) == (0, 1)
        fn()
        return float(next(fake_seconds))

    monkeypatch.setattr(measure, "time_step", fake_time_step)
    t = measure.interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b",  # warm-up, untimed
                     "a", "b", "b", "a", "a", "b"]
    # a was timed at calls 1, 4, 5 and b at 2, 3, 6 of the fake clock: medians 4 and 3
    assert t == {"a": 4.0, "b": 3.0}


def test_paired_ratio_is_the_median_of_per_round_ratios():
    # round 2 ran during a slow spell (both candidates 4x slower): it cancels within the round
    samples = {"lora": [0.7, 2.8, 0.8], "full": [1.0, 4.0, 1.0]}
    assert measure.paired_ratio(samples, "lora", "full") == pytest.approx(0.7)
    # the ratio of medians would mix rounds: 0.8 / 1.0
    row = bench.timing_row("lora / full", samples, "lora", "full", limit=0.75)
    assert (row.numerator, row.denominator) == ("800.0 ms", "1000.0 ms")
    assert row.ratio == pytest.approx(0.7) and row.verdict == "PASS"


@pytest.mark.parametrize("samples, match", [({"a": [1.0]}, "not among"), ({"a": [1.0], "b": [1.0, 2.0]}, "same"),
                                            ({"a": [], "b": []}, "non-zero")])
def test_paired_ratio_rejects_bad_samples(samples, match):
    with pytest.raises(ValueError, match=match):
        measure.paired_ratio(samples, "a", "b")


@pytest.mark.parametrize("kwargs, error", [({"fns": {}}, TypeError), ({"fns": {"a": 1}}, TypeError),
                                           ({"rounds": 0}, ValueError), ({"warmup": -1}, ValueError),
                                           ({"rounds": True}, ValueError)])
def test_interleaved_times_rejects_bad_input(kwargs, error):
    args = {"fns": {"a": lambda: None}, "rounds": 2, "warmup": 0, **kwargs}
    with pytest.raises(error):
        measure.interleaved_times(**args)


# --- the lora rows -----------------------------------------------------------------------------

def test_lora_rows_structure_and_parameter_ratios(model):
    before = copy.deepcopy(model.state_dict())
    rows = bench.lora_rows(model, BATCH, rounds=1, warmup=0, peft=False)
    assert [r.quantity for r in rows] == PEFTLAB_ROWS + INFERENCE_ROWS
    total = count_parameters(model).total
    # r * (in + out) per adapted layer: q,v are 32 -> 32; all-linear adds k, o (32 -> 32),
    # gate, up (32 -> 64) and down (64 -> 32)
    qv = CFG.n_layers * 2 * 8 * (32 + 32)
    every = CFG.n_layers * (4 * 8 * (32 + 32) + 3 * 8 * (32 + 64))
    assert (rows[0].numerator, rows[0].denominator, rows[0].ratio) == (f"{qv:,}", f"{total:,}", qv / total)
    assert rows[1].ratio == every / total
    limits = {r.quantity: r.limit for r in rows}
    assert limits["train step: LoRA q,v / full fine-tuning"] == 0.8
    assert limits["inference: merged / base"] == 1.02
    for r in rows[2:]:
        assert r.ratio > 0 and r.numerator.endswith(" ms") and r.denominator.endswith(" ms")
    # the base model is copied, never changed
    assert not lora._wrappers(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_randomize_lora_B_makes_the_merge_change_the_weights(model):
    adapted = lora.add(copy.deepcopy(model), r=4)
    lora.randomize_B(adapted)
    q = adapted.layers[0].self_attn.q_proj
    assert q.lora_B["default"].abs().min() > 0
    weight = q.base_layer.weight.clone()
    lora.merge(adapted)
    assert not torch.allclose(q.base_layer.weight, weight)


def test_lora_rows_refuses_peft_when_not_installed(model, monkeypatch):
    monkeypatch.setattr(bench, "peft_available", lambda: False)
    with pytest.raises(ValueError, match="peft=True"):
        bench.lora_rows(model, BATCH, rounds=1, warmup=0, peft=True)


def test_lora_rows_against_peft_on_the_same_model(model):
    pytest.importorskip("peft")
    rows = bench.lora_rows(model, BATCH, rounds=1, warmup=0, peft=True)
    assert [r.quantity for r in rows] == PEFTLAB_ROWS + PEFT_ROWS + INFERENCE_ROWS
    by_name = {r.quantity: r for r in rows}
    assert by_name["train step: peftlab / PEFT (same HF Llama)"].limit == 1.0
    # same model, same adapter shapes, same batch: peftlab keeps no more bytes than PEFT
    assert by_name["train memory: peftlab / PEFT (same HF Llama)"].ratio <= 1.0


def test_logits_only_gives_transformers_models_the_peftlab_interface(model):
    pytest.importorskip("transformers")
    from peftlab.hf import to_hf

    torch.testing.assert_close(bench.LogitsOnly(to_hf(model))(BATCH), model(BATCH), rtol=1e-4, atol=1e-4)


# --- command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [[], ["memory-typo"], ["lora", "--batch", "0"], ["lora", "--warmup", "-1"]])
def test_parser_rejects_bad_arguments(argv):
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(argv)


def test_parser_defaults():
    args = bench.build_parser().parse_args(["lora"])
    assert (args.batch, args.seq, args.rounds, args.warmup, args.no_peft) == (16, 128, 15, 2, False)
    assert args.run is bench._run_lora


# --- the memory rows ---------------------------------------------------------------------------

def test_memory_rows_ratios_to_full_fine_tuning(model):
    before = copy.deepcopy(model.state_dict())
    rows = bench.memory_rows(model, BATCH, rounds=1, warmup=0)
    names = [m for m in bench.MEMORY_METHODS if m != "full"]
    assert names == ["lora", "qlora", "adapters", "prompt", "prefix", "ptuning"]
    categories = [c.replace("total", "accounted total") for c in bench.MEMORY_CATEGORIES]
    assert [r.quantity for r in rows] == [f"{m} / full: {c}" for m in names for c in (*categories, "train step")]
    by_name = {r.quantity: r for r in rows}
    # the frozen base costs only weights; gradients and Adam state exist for the adapters alone
    adapter = count_parameters(lora.add(copy.deepcopy(model), r=8, targets=bench.TARGETS)).trainable
    n = count_parameters(model).total
    assert by_name["lora / full: gradients"].ratio == adapter / n
    assert by_name["lora / full: optimizer"].ratio == 2 * adapter / (2 * n)
    assert by_name["lora / full: weights"].ratio == (n + adapter) / n
    assert by_name["qlora / full: weights"].ratio < by_name["lora / full: weights"].ratio
    assert by_name["lora / full: activations"].ratio < 1.0  # frozen layers keep no inputs
    # a soft prompt of 20 vectors of width d is all that trains (Lester et al.: n * d)
    assert by_name["prompt / full: gradients"].ratio == 20 * model.config.d_model / n
    for method in ("adapters", "prompt", "prefix", "ptuning"):
        assert by_name[f"{method} / full: weights"].ratio > 1.0  # the frozen base plus the new parameters
    # a soft prompt of 20 vectors of width d is all that trains (Lester et al.: n * d)
    assert by_name["prompt / full: gradients"].ratio == 20 * model.config.d_model / n
    for method in ("adapters", "prompt", "prefix", "ptuning"):
        assert by_name[f"{method} / full: weights"].ratio > 1.0  # the frozen base plus the new parameters
    assert by_name["lora / full: train step"].numerator.endswith(" ms")
    assert all(r.limit is None for r in rows)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_memory_rows_take_a_subset_of_methods(model):
    rows = bench.memory_rows(model, BATCH, ("full", "adapters"), rounds=1, warmup=0)
    assert {r.quantity.split(" / ")[0] for r in rows} == {"adapters"}
    assert len(rows) == len(bench.MEMORY_CATEGORIES) + 1


@pytest.mark.parametrize("names", [(), ("lora",), ("full", "loraa"), "full"])
def test_memory_rows_reject_bad_methods(model, names):
    with pytest.raises(ValueError, match="names must be a list of methods"):
        bench.memory_rows(model, BATCH, names, rounds=1, warmup=0)


def test_memory_parser():
    args = bench.build_parser().parse_args(["memory"])
    assert (args.batch, args.seq, args.rounds, args.warmup) == (8, 128, 10, 2)
    assert args.methods == list(bench.MEMORY_METHODS) and args.run is bench._run_memory
    assert bench.build_parser().parse_args(["memory", "--methods", "lora"]).methods == ["lora"]
    for argv in (["memory", "--methods", "prefixes"], ["memory", "--batch", "0"], ["memory", "--rounds", "0"]):
        with pytest.raises(SystemExit):
            bench.build_parser().parse_args(argv)


def test_memory_command_prints_the_ratio_table_and_the_peak_table(capsys):
    bench.main(["memory", "--batch", "1", "--seq", "8", "--rounds", "1", "--warmup", "0", "--methods", "lora"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("peftlab bench memory:")
    assert sum(line.startswith("lora / full:") for line in out) == len(bench.MEMORY_CATEGORIES) + 1
    assert not any(line.startswith("qlora") for line in out)
    assert "0 of 0 targets met" in out and out[-1].endswith("rows within 10% of the measured peak")
    peak_lines = [line for line in out if line.split(" | ")[0].strip() in ("full", "lora")]
    assert [line.split(" | ")[1:3] for line in peak_lines] == [
        [c.ljust(13), s.ljust(5)] for m in ("full", "lora") for c in ("off", "on") for s in ("first", "later")]


def test_peak_rows_judge_the_ratio_both_ways():
    assert bench.PeakRow("m", False, "first", 10, 95, 100).verdict == "PASS"
    assert bench.PeakRow("m", False, "first", 10, 89, 100).verdict == "FAIL"
    assert bench.PeakRow("m", False, "first", 10, 111, 100).verdict == "FAIL"
    with pytest.raises(ValueError, match="names must be"):
        bench.peak_rows(Transformer(CFG), BATCH, ["fullest"])
