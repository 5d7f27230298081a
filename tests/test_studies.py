"""peftlab.studies: config hashing, staleness, the run loop and its results file, the replica check, bands.

Everything runs a toy study on a tiny random model saved as a checkpoint in a temporary directory, and
writes results to temporary directories: nothing here trains the real base or touches the shipped results.
"""

import dataclasses
import json
import math
import statistics

import pytest
import torch

from peftlab import data, studies
from peftlab.checkpoint import load_base, save_checkpoint
from peftlab.evidence import compare, t_quantile
from peftlab.model import ModelConfig, Transformer
from peftlab.studies import Claim, Method, Study
from peftlab.studies.__main__ import main

TINY = ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64)


def toy_study(**changes) -> Study:
    study = Study(
        id="toy", title="toy study", notebook="none",
        methods=(Method("prompt", "prompt", {"n_tokens": 4, "init": "vocab"}, lrs=(0.1, 0.3), steps=4),
                 Method("lora", "lora", {"r": 2}, lrs=(1e-2,), steps=4)),
        claims=(Claim("lower", "LoRA's loss is lower", "a test", "answer_loss", "lora", "prompt", "less", 0.0),
                Claim("agree", "exact match agrees", "a test", "exact_match", "prompt", "lora", "equivalent", 0.1)),
        seeds=(0, 1), seeds_note="2 seeds: a test", sweep_seeds=(0,), sweep_steps=2, eval_every=2,
        eval_note="the first 8 of val and test", batch_size=4, base="toy", n_eval=8)
    return dataclasses.replace(study, **changes)


def with_margin(study: Study, margin: float) -> Study:
    return dataclasses.replace(study, claims=(dataclasses.replace(study.claims[0], margin=margin),) + study.claims[1:])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    directory = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    save_checkpoint(Transformer(TINY), "toy", {}, directory=directory)
    return directory


@pytest.fixture(scope="module")
def stored(tmp_path_factory, checkpoints):
    """One toy run, written once for the module; tests that alter it work on a copy."""
    directory = tmp_path_factory.mktemp("results")
    results = studies.run(toy_study(), directory=directory, checkpoints=checkpoints, progress=False)
    return directory, results


@pytest.fixture
def copy_of(stored, tmp_path):
    directory, _ = stored
    (tmp_path / "toy.json").write_text((directory / "toy.json").read_text())
    return tmp_path


def test_config_hash_is_stable_and_covers_the_margins():
    study = toy_study()
    assert studies.config_hash(study) == studies.config_hash(toy_study())
    assert studies.config_hash(with_margin(study, 0.05)) != studies.config_hash(study)
    assert studies.config_hash(toy_study(seeds=(0, 1, 2))) != studies.config_hash(study)


def test_status_missing_fresh_and_stale(stored, checkpoints, tmp_path):
    directory, _ = stored
    assert studies.status(toy_study(), tmp_path, checkpoints) == "missing"
    assert studies.status(toy_study(), directory, checkpoints) == "fresh"
    assert studies.status(with_margin(toy_study(), 0.05), directory, checkpoints) == "stale"
    (tmp_path / "toy.json").write_text((directory / "toy.json").read_text())
    torch.manual_seed(1)  # another base checkpoint under the same name: the stored hash no longer matches
    save_checkpoint(Transformer(TINY), "toy", {}, directory=tmp_path)
    assert studies.status(toy_study(), tmp_path, tmp_path) == "stale"
    (tmp_path / "toy.json").write_text("{ half a file")
    assert studies.status(toy_study(), tmp_path, checkpoints) == "stale"


def test_load_results_refuses_another_config_and_names_the_difference(stored, checkpoints):
    directory, results = stored
    assert studies.load_results(toy_study(), directory, checkpoints)["config_sha256"] == results["config_sha256"]
    with pytest.raises(ValueError, match=r"claims\[lower\]\.margin: the file has 0\.0, the study now declares 0\.05"):
        studies.load_results(with_margin(toy_study(), 0.05), directory, checkpoints)
    with pytest.raises(ValueError, match=r"config\.sweep_steps: the file has 2, the study now declares 3"):
        studies.load_results(toy_study(sweep_steps=3), directory, checkpoints)


def test_unknown_id_lists_the_known_ones_and_writes_nothing(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown study 'nope'; known studies: .*06_prompt"):
        studies.get("nope")
    with pytest.raises(SystemExit) as exit_:
        main(["run", "nope", "--results", str(tmp_path)])
    assert exit_.value.code == 2
    assert "known studies: " in (err := capsys.readouterr().err) and "06_prompt" in err
    assert list(tmp_path.iterdir()) == []


def test_run_writes_every_required_field(stored, checkpoints):
    directory, results = stored
    study = toy_study()
    assert json.loads((directory / "toy.json").read_text()) == results
    assert results["config"] == studies.config(study)
    assert results["config_sha256"] == studies.config_hash(study)
    assert results["base_sha256"] == studies.base_hash(study, checkpoints)
    assert results["peftlab_version"] and results["torch"] == torch.__version__
    assert results["device"] == "cpu" and results["threads"] >= 1 and results["wall_time_s"] > 0
    assert results["eval_sizes"] == {"train": len(data.qa_task()["train"]), "val": 8, "test": 8}
    prompt_sweep = results["sweep"]["prompt"]
    assert [g["lr"] for g in prompt_sweep["grid"]] == [0.1, 0.3] and prompt_sweep["split"] == "val"
    assert prompt_sweep["best_lr"] == min(prompt_sweep["grid"], key=lambda g: g["mean"])["lr"]
    for label, run in results["runs"].items():
        assert run["lr"] == results["sweep"][label]["best_lr"]
        assert [r["seed"] for r in run["seeds"]] == [0, 1]
        for r in run["seeds"]:
            assert r["curve"]["step"] == [0, 2, 4] and len(r["train_loss"]) == 4
            assert len(r["curve"]["val"]["answer_loss"]) == len(r["curve"]["test"]["answer_loss"]) == 3
            assert set(r["final"]) == {"answer_loss", "exact_match"}
            assert r["final"]["answer_loss"] == pytest.approx(r["curve"]["test"]["answer_loss"][-1], abs=1e-6)
    for claim, declared in zip(results["claims"], study.claims):
        a = [r["final"][declared.metric] for r in results["runs"][declared.a]["seeds"]]
        b = [r["final"][declared.metric] for r in results["runs"][declared.b]["seeds"]]
        ev = compare(a, b, claim=declared.kind, margin=declared.margin)
        assert (claim["claim"], claim["verdict"], claim["n_seeds"]) == (declared.statement, ev.verdict, 2)
        assert (claim["estimate"], claim["low"], claim["high"]) == pytest.approx((ev.estimate, ev.low, ev.high))


def test_runs_are_reproducible_and_check_agrees_then_disagrees(stored, copy_of, checkpoints, monkeypatch, capsys):
    directory, _ = stored
    outcome = studies.check(toy_study(), directory=directory, checkpoints=checkpoints)
    assert outcome.ok and outcome.max_diff < 1e-5 and outcome.exit_code == 0
    monkeypatch.setattr(studies, "all_studies", lambda: {"toy": toy_study()})
    common = ["--results", str(copy_of), "--checkpoints", str(checkpoints)]
    assert main(["check", "toy", *common]) == 0
    results = json.loads((copy_of / "toy.json").read_text())
    results["runs"]["prompt"]["seeds"][0]["curve"]["test"]["answer_loss"][1] += 0.1
    (copy_of / "toy.json").write_text(json.dumps(results))
    assert main(["check", "toy", *common]) == 1
    assert "DISAGREE" in capsys.readouterr().out


def test_a_run_that_fails_midway_leaves_no_file(checkpoints, copy_of, monkeypatch):
    before = (copy_of / "toy.json").read_text()
    real_train, calls = studies.train, []

    def failing_train(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed halfway")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(studies, "train", failing_train)
    with pytest.raises(RuntimeError, match="killed halfway"):
        studies.run(toy_study(seeds=(5, 6)), directory=copy_of, checkpoints=checkpoints, progress=False)
    assert [p.name for p in copy_of.iterdir()] == ["toy.json"] and (copy_of / "toy.json").read_text() == before


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = studies.write_results({"old": 1}, tmp_path / "x.json")

    def half_dump(obj, f, **kwargs):
        f.write('{"new": ')
        raise OSError("disk full")

    monkeypatch.setattr(studies.json, "dump", half_dump)
    with pytest.raises(OSError, match="disk full"):
        studies.write_results({"new": 2}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"] and json.loads(path.read_text()) == {"old": 1}


def synthetic(values_at_10):
    seeds = [{"seed": i, "train_loss": [2.0, 1.0], "curve": {"step": [0, 10], "val": {"answer_loss": [3.0, v]},
                                                             "test": {"answer_loss": [3.0, v]}}}
             for i, v in enumerate(values_at_10)]
    return {"runs": {"lora": {"seeds": seeds}}}


def test_band_is_a_t_interval_over_seeds():
    values = [1.0, 1.2, 1.1, 0.9, 1.3]
    b = studies.band(synthetic(values), "lora", "answer_loss")
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    half = t_quantile(0.975, 4) * sd / math.sqrt(5)
    assert b.step == [0, 10] and b.n == 5
    assert b.at(10) == pytest.approx((mean, mean - half, mean + half))
    assert b.at(0) == pytest.approx((3.0, 3.0, 3.0))  # every seed equal: a point
    run = studies.band(synthetic(values), "lora", "answer_loss", interval="run")
    assert run.high[1] - run.low[1] == pytest.approx(2 * half * math.sqrt(6))  # sqrt(1 + 1/n) / sqrt(1/n)
    assert studies.band(synthetic(values), "lora", "train_loss").step == [1, 2]
    with pytest.raises(ValueError, match="method must be one of"):
        studies.band(synthetic(values), "prompt", "answer_loss")
    with pytest.raises(ValueError, match="needs at least 2 seeds"):
        studies.band(synthetic([1.0]), "lora", "answer_loss")


def test_live_point_inside_the_band_or_not():
    results = synthetic([1.0, 1.2, 1.1, 0.9, 1.3])
    inside, message = studies.live_point_inside(results, "lora", 10, 1.25)
    assert inside and "inside" in message and "5 seeds" in message
    inside, message = studies.live_point_inside(results, "lora", 10, 2.0)
    assert not inside and "OUTSIDE" in message
    with pytest.raises(ValueError, match=r"step must be one of the study's evaluation steps \[0, 10\]"):
        studies.live_point_inside(results, "lora", 5, 1.0)


def test_live_run_reproduces_the_stored_run_and_refuses_other_steps(stored, checkpoints, monkeypatch):
    _, results = stored
    monkeypatch.setattr(studies, "all_studies", lambda: {"toy": toy_study()})
    base = load_base("toy", directory=checkpoints)
    model, value = studies.live_run(results, "prompt", 2, base, seed=0)
    assert value == pytest.approx(results["runs"]["prompt"]["seeds"][0]["curve"]["test"]["answer_loss"][1], abs=1e-5)
    assert model.method == "prompt" and not hasattr(base, "method")  # trained a copy; the base is untouched
    with pytest.raises(ValueError, match=r"steps must be one of the study's evaluation steps \[0, 2, 4\], got 3"):
        studies.live_run(results, "prompt", 3, base)
    with pytest.raises(ValueError, match="method"):
        studies.live_run(results, "no_such_method", 2, base)

def test_plateau_rule():
    assert studies.plateau_step([0, 10, 20, 30, 40], [2.0, 1.0, 0.8, 0.795, 0.794]) == 30
    assert studies.plateau_step([0, 10, 20], [2.0, 1.0, 0.5]) is None
    assert studies.plateau_step([0, 10, 20], [0.1, 0.5, 0.5], goal="max", threshold=0.01) == 20


def test_a_bad_declaration_is_refused_with_the_parameter_named():
    with pytest.raises(ValueError, match="a and b must be method labels"):
        toy_study(claims=(Claim("x", "s", "src", "answer_loss", "full", "lora", "less", 0.0),))
    with pytest.raises(ValueError, match="seeds must be at least 2"):
        toy_study(seeds=(0,))
    with pytest.raises(ValueError, match="margin must be > 0 for claim='equivalent'"):
        toy_study(claims=(Claim("x", "s", "src", "answer_loss", "prompt", "lora", "equivalent", 0.0),))
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        studies.check_device("tpu")


def test_the_declared_prompt_study():
    study = studies.get("06_prompt")
    prompt, lora = study.method("prompt20"), study.method("lora")
    assert (prompt.name, dict(prompt.options), prompt.lrs) == ("prompt", {"n_tokens": 20, "init": "vocab"},
                                                               (0.03, 0.1, 0.3))
    assert (lora.name, lora.options["r"], tuple(lora.options["targets"]), lora.lrs) == (
        "lora", 8, ("q_proj", "v_proj"), (1e-3, 3e-3, 1e-2))
    assert all(len(m.lrs) >= 3 for m in study.methods)  # every method gets its own sweep
    assert len({m.steps for m in study.methods}) == 1  # equal steps
    assert len(study.seeds) >= 5 and study.n_eval is None and study.metric == "answer_loss"
    assert str(len(data.qa_task()["test"])) in study.eval_note  # the eval size it states is the real one
    assert {c.kind for c in study.claims} == {"equivalent", "less", "greater"}
    assert all("et al." in c.source for c in study.claims)
    assert all(c.margin > 0 for c in study.claims if c.kind == "equivalent")


def test_a_sweep_width_claim_counts_the_rates_that_train(checkpoints, tmp_path):
    """on="sweep_width": per sweep seed, the number of swept rates whose val metric reached `success`."""
    wide = Claim("wide", "prompt trains at more rates", "a test", "answer_loss", "prompt", "lora2", "greater", 0.0,
                 paired=True, on="sweep_width", success=1e9)  # every finite loss counts: 2 rates vs 1
    study = toy_study(methods=toy_study().methods + (Method("lora2", "lora", {"r": 2}, lrs=(0.1, 0.3), steps=4),),
                      claims=(wide,), sweep_seeds=(0, 1))
    with pytest.raises(ValueError, match="the same learning rates"):
        dataclasses.replace(study, claims=(dataclasses.replace(wide, b="lora"),))
    with pytest.raises(ValueError, match="finite success threshold"):
        dataclasses.replace(study, claims=(dataclasses.replace(wide, success=None),))
    with pytest.raises(ValueError, match="on must be one of"):
        dataclasses.replace(study, claims=(dataclasses.replace(wide, on="sweep"),))
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    (claim,) = results["claims"]
    assert claim["a_values"] == claim["b_values"] == [2, 2]  # both rates of both methods reach it, each seed
    strict = dataclasses.replace(wide, success=-1.0)  # no loss is below -1: nothing trains
    assert studies.weigh(strict, results["runs"], results["sweep"])["a_values"] == [0, 0]


def test_new_optional_fields_leave_earlier_configs_fresh(stored, checkpoints):
    """A field added after a study ran (n_train, sweep_seeds, curve_metrics, a claim's on/success) is left out
    of the hash while it holds its default, and counts as soon as it is used."""
    study = toy_study()
    assert "n_train" not in json.dumps(studies.experiment(studies.config(study)))
    low = dataclasses.replace(study, methods=(dataclasses.replace(study.methods[0], n_train=8),) + study.methods[1:])
    assert studies.config_hash(low) != studies.config_hash(study)
    assert studies.config_hash(dataclasses.replace(study, curve_metrics=("exact_match",))) != studies.config_hash(study)


def test_n_train_and_curve_metrics_are_used(checkpoints, tmp_path):
    study = toy_study(methods=(dataclasses.replace(toy_study().methods[0], n_train=4),) + toy_study().methods[1:],
                      curve_metrics=("exact_match",))
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    curve = results["runs"]["prompt"]["seeds"][0]["curve"]
    assert set(curve["test"]) == {"answer_loss", "exact_match"} and len(curve["test"]["exact_match"]) == 3
    with pytest.raises(ValueError, match="n_train must be a positive int"):
        toy_study(methods=(dataclasses.replace(toy_study().methods[0], n_train=0),) + toy_study().methods[1:])


def test_dense_probes_old_knowledge_and_a_matched_claim(checkpoints, tmp_path):
    """eval_steps adds probes, curve_splits limits where curve_metrics are measured, METRIC_DATA measures
    old knowledge on its own data, sweep_metrics are recorded in the sweep, and on="matched" reads each
    run's test metric where its val curve reaches the level."""
    level = 1e9  # every finite loss is at or below it: matched at step 0
    kept = Claim("kept", "LoRA keeps facts", "a test", "fact_rank", "lora", "prompt", "greater", 0.0,
                 on="matched", success=level)
    study = toy_study(task="dna_task", metric="rc_loss", finals=("rc_loss", "fact_rank"), eval_steps=(1, 3, 9),
                      curve_metrics=("fact_rank",), curve_splits=("test",), sweep_metrics=("fact_match",),
                      claims=(kept,))
    with pytest.raises(ValueError, match="a matched claim reads metric on the test curve"):
        dataclasses.replace(study, claims=(dataclasses.replace(kept, metric="fact_match"),))
    with pytest.raises(ValueError, match="a matched claim needs a finite success"):
        dataclasses.replace(study, claims=(dataclasses.replace(kept, success=None),))
    with pytest.raises(ValueError, match="curve_splits must name splits"):
        dataclasses.replace(study, curve_splits=("train",))
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    record = results["runs"]["lora"]["seeds"][0]
    assert record["curve"]["step"] == [0, 1, 2, 3, 4]  # every 2, plus 1 and 3; 9 lies past the 4 steps
    assert set(record["curve"]["val"]) == {"rc_loss"} and set(record["curve"]["test"]) == {"rc_loss", "fact_rank"}
    assert set(record["final"]) == {"rc_loss", "fact_rank"} and 0 <= record["final"]["fact_rank"] <= 1
    assert len(results["sweep"]["prompt"]["grid"][0]["also"]["fact_match"]) == 1  # one sweep seed
    (claim,) = results["claims"]
    assert claim["a_values"] == [r["curve"]["test"]["fact_rank"][0] for r in results["runs"]["lora"]["seeds"]]
    never = studies.weigh(dataclasses.replace(kept, success=-1.0), results["runs"], results["sweep"])
    assert never["verdict"] == "inconclusive" and "never reached val rc_loss -1 (lora: 2 of 2 runs" in never["reason"]
    assert studies.config_hash(toy_study()) == studies.config_hash(
        toy_study(curve_splits=("val", "test"), eval_steps=(), sweep_metrics=()))  # defaults leave hashes alone


@pytest.mark.parametrize("study_id", list(studies.all_studies()))
def test_every_shipped_study_is_fresh(study_id):
    """Results ship with the package and must match today's config and base checkpoint: change a margin,
    a grid or the base model, and this fails until `python -m peftlab.studies run ID` is run again."""
    assert studies.status(study_id) == "fresh", (
        f"{study_id} is {studies.status(study_id)}: rerun `python -m peftlab.studies run {study_id}`")
    results = studies.load_results(study_id)
    for c in results["claims"]:  # every stored verdict is what compare gives on the stored values
        if c.get("reason"):  # a run never reached a matched level, or diverged: the verdict says why not
            assert c["verdict"] in ("inconclusive", "not computed"), c["id"]
            continue
        ev = compare(c["a_values"], c["b_values"], claim=c["kind"], margin=c["margin"], paired=c["paired"])
        assert (ev.verdict, ev.n) == (c["verdict"], c["n_seeds"]), c["id"]


def test_a_diverging_rate_is_recorded_and_never_chosen(checkpoints, tmp_path, monkeypatch):
    """A rate at which training diverges (train raises NonFiniteLoss at the first NaN loss; here forced at
    lr 0.3): the sweep records null, the rate is never chosen and never counts as training."""
    from peftlab.train import NonFiniteLoss
    real = studies.train

    def diverges_at_03(model, data, *, lr, **kwargs):
        if lr == 0.3:
            raise NonFiniteLoss(2, float("nan"))
        return real(model, data, lr=lr, **kwargs)

    monkeypatch.setattr(studies, "train", diverges_at_03)
    studies.run(toy_study(), directory=tmp_path, checkpoints=checkpoints, progress=False)
    results = json.loads((tmp_path / "toy.json").read_text())  # as written: a diverged value is null
    grid = results["sweep"]["prompt"]["grid"]
    assert [g["lr"] for g in grid] == [0.1, 0.3] and grid[1]["val"] == [None] and grid[1]["mean"] is None
    assert results["sweep"]["prompt"]["best_lr"] == 0.1
    assert studies.sweep_width(results["sweep"], "prompt", 1e9) == [1]  # the diverged rate never counts


def test_a_claim_against_the_base_model(checkpoints, tmp_path):
    """b="base": the base model's own value, read at step 0 of the test curve (one number, the same for every
    seed), weighed by compare's one-sample interval."""
    drop = Claim("drop", "training lowers the loss", "a test", "answer_loss", "lora", studies.BASE, "less", 0.0)
    with pytest.raises(ValueError, match="b='base' reads the base model at step 0"):
        toy_study(claims=(dataclasses.replace(drop, metric="exact_match"),))  # not on the curve
    with pytest.raises(ValueError, match="b='base' reads the base model at step 0"):
        toy_study(claims=(dataclasses.replace(drop, on="matched", success=1.0),), curve_metrics=("answer_loss",))
    results = studies.run(toy_study(claims=(drop,)), directory=tmp_path, checkpoints=checkpoints, progress=False)
    (claim,) = results["claims"]
    base_value = results["runs"]["lora"]["seeds"][0]["curve"]["test"]["answer_loss"][0]
    assert claim["b_values"] == base_value == results["runs"]["lora"]["seeds"][1]["curve"]["test"]["answer_loss"][0]
    ev = compare(claim["a_values"], base_value, claim="less")
    assert (claim["verdict"], claim["estimate"], claim["n_seeds"]) == (ev.verdict, ev.estimate, 2)


def test_a_second_base_and_wrong_answers(checkpoints, tmp_path):
    """Method.base trains that method from another checkpoint (and the staleness hash covers both bases);
    Method.wrong trains on a Q/A set with that share of wrong answers; a base that does not exist and a share
    outside [0, 1] are refused before anything runs or is written."""
    torch.manual_seed(1)
    save_checkpoint(Transformer(TINY), "toy2", {}, directory=checkpoints)
    lora = toy_study().methods[1]
    other = dataclasses.replace(lora, label="other", base="toy2")
    noisy = dataclasses.replace(lora, label="noisy", wrong=1.0)
    study = toy_study(methods=(lora, other, noisy), claims=(
        Claim("x", "s", "a test", "answer_loss", "other", "lora", "less", 0.0),))
    assert studies.bases(study) == ["toy", "toy2"]
    assert studies.base_hash(study, checkpoints) != studies.base_hash(toy_study(), checkpoints)
    with pytest.raises(ValueError, match=r"share \(the wrong-answer share\) must be a number in \[0, 1\], got 1.5"):
        dataclasses.replace(study, methods=(lora, other, dataclasses.replace(noisy, wrong=1.5)))
    with pytest.raises(ValueError, match="wrong .* needs task='qa_task'"):
        dataclasses.replace(study, task="sql_task")
    missing = dataclasses.replace(study, methods=(lora, dataclasses.replace(other, base="nope"), noisy))
    with pytest.raises(ValueError, match="unknown base model 'nope'"):
        studies.run(missing, directory=tmp_path, checkpoints=checkpoints, progress=False)
    assert not studies.results_path(missing, tmp_path).exists()
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    step0 = {m: results["runs"][m]["seeds"][0]["curve"]["test"]["answer_loss"][0] for m in ("lora", "other", "noisy")}
    assert step0["lora"] == step0["noisy"] != step0["other"]  # another base model answers otherwise
    assert results["runs"]["lora"]["seeds"][0]["train_loss"] != results["runs"]["noisy"]["seeds"][0]["train_loss"]
    assert studies.status(study, tmp_path, checkpoints) == "fresh"


def test_combos_join_the_final_adapters_and_claims_can_weigh_them(checkpoints, tmp_path):
    """Method.task trains a method on another task; a Combo joins, per seed, the adapters the final runs trained
    (here cat, the exact sum, and the base model itself); the weight sweep measures (1 - t, t) over a pair; a
    claim may name a combo; a bad combo is refused."""
    lora = toy_study().methods[1]
    a = dataclasses.replace(lora, label="a", task="sql_task")
    b = dataclasses.replace(lora, label="b", task="python_task")
    combos = (studies.Combo("none", "base"), studies.Combo("sum", "cat", {"a": 1.0, "b": 1.0}),
              studies.Combo("a_only", "cat", {"a": 1.0}))
    claim = Claim("worse", "the sum is worse on SQL than a alone", "a test", "sql_loss", "sum", "a", "greater", 0.0)
    study = toy_study(methods=(a, b), combos=combos, claims=(claim,), finals=("sql_loss", "python_loss"),
                      weight_sweep=("cat",), weight_pair=("a", "b"), weight_grid=(0.0, 1.0))
    for bad, match in ((dict(combos=(studies.Combo("x", "blend", {"a": 1.0}),)), "kind must be one of"),
                       (dict(combos=(studies.Combo("x", "cat", {"c": 1.0}),)), "weights must map method labels"),
                       (dict(combos=(studies.Combo("a", "cat", {"a": 1.0}),)), "distinct labels, none a method's"),
                       (dict(weight_pair=("a",)), "weight_pair must name 2 methods")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(study, **bad)
    with pytest.raises(ValueError, match="task must be one of"):
        dataclasses.replace(study, methods=(dataclasses.replace(a, task="chess"), b))
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    final = {k: [s["final"] for s in v["seeds"]] for k, v in {**results["runs"], **results["combos"]}.items()}
    for joined, trained in zip(final["a_only"], final["a"]):  # one adapter at weight 1 is that adapter
        assert joined == pytest.approx(trained, abs=1e-5)
    assert final["none"][0] == final["none"][1] != final["a"][0]  # the base model, the same for every seed
    sweep = results["weight_sweep"]["cat"]["seeds"][0]
    assert sweep["sql_loss"][0] == pytest.approx(final["a"][0]["sql_loss"], abs=1e-5)  # t = 0: all a
    assert sweep["python_loss"][1] == pytest.approx(final["b"][0]["python_loss"], abs=1e-5)  # t = 1: all b
    (weighed,) = results["claims"]
    assert weighed["a_values"] == [f["sql_loss"] for f in final["sum"]]
    assert weighed["b_values"] == [f["sql_loss"] for f in final["a"]]
    assert studies.status(study, tmp_path, checkpoints) == "fresh"


def test_a_fusion_method_fuses_each_seeds_final_adapters_and_leaves_them_unchanged(checkpoints, tmp_path,
                                                                                   monkeypatch):
    """A method named FUSION gathers, per seed, the adapters its sources' final runs of that seed trained, and
    trains only a fusion layer over them on its task; its sweep fuses the sweep seed's adapters. Bad sources
    are refused before any run, and a fusion cannot be a live run."""
    adapter = Method("a", "adapters", {"bottleneck": 4}, lrs=(1e-2,), steps=4, task="sql_task")
    b = dataclasses.replace(adapter, label="b", task="python_task")
    fusion = Method("fused", studies.FUSION, {}, lrs=(1e-3,), steps=4, task="python_task", sources=("a", "b"))
    claim = Claim("lower", "fusion beats b", "a test", "answer_loss", "fused", "b", "less", 0.0)
    study = toy_study(methods=(adapter, b, fusion), claims=(claim,), finals=("answer_loss",))
    for bad, match in ((dict(sources=("a",)), "at least 2 distinct adapter methods declared before it"),
                       (dict(sources=("a", "later")), "declared before it"),
                       (dict(sources=()), "sources .* go with name 'fusion' only"),
                       (dict(name="lora", options={}), "sources .* go with name 'fusion' only"),
                       (dict(sweep_seeds=(7,)), "sweep seeds must be among seeds")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(study, methods=(adapter, b, dataclasses.replace(fusion, **bad)))
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    runs = results["runs"]
    assert set(runs) == {"a", "b", "fused"} and len(runs["fused"]["seeds"]) == 2
    fused, own = runs["fused"]["seeds"][0], runs["b"]["seeds"][0]
    assert fused["curve"]["test"]["answer_loss"][0] != own["curve"]["test"]["answer_loss"][-1]  # a mix, not b
    assert fused["train_loss"] != own["train_loss"]
    assert results["claims"][0]["a_values"] == [s["final"]["answer_loss"] for s in runs["fused"]["seeds"]]
    monkeypatch.setattr(studies, "all_studies", lambda: {"toy": study})
    with pytest.raises(ValueError, match="fuses the adapters of"):
        studies.live_run(results, "fused", 4, None)


def test_gathered_adapters_keep_their_outputs_and_fusion_trains_only_itself():
    """adapters.gather copies each model's active adapter in under its name: set active, each computes what it
    computed in its own model; a fusion over them trains its own weights only."""
    from peftlab import adapters, methods
    torch.manual_seed(0)
    base = Transformer(TINY)
    trained = {}
    for name in ("a", "b"):
        m = methods.prepare(base, "adapters", bottleneck=4)
        for p in (p for p in m.parameters() if p.requires_grad):
            torch.nn.init.normal_(p, std=0.1)  # as if trained: an adapter that changes the output
        trained[name] = m
    both = adapters.gather(trained)
    ids = torch.randint(0, TINY.vocab_size, (2, 6))
    for name, m in trained.items():
        adapters.set_active(both, name)
        assert torch.equal(both(ids), m(ids))
    adapters.add_fusion(both, ["a", "b"])
    assert all(".fusions." in n for n, p in both.named_parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="at least two"):
        adapters.gather({"a": trained["a"]})
    with pytest.raises(ValueError, match=r"models\['b'\] must be a model whose every adapted sublayer"):
        adapters.gather({"a": trained["a"], "b": base})


def test_pair_loss_from_the_two_task_losses_equals_its_own_pass():
    """measure_finals derives pair_loss from sql_loss and python_loss when both are measured: the same value
    as pair_loss measured alone."""
    torch.manual_seed(0)
    model = Transformer(TINY)
    derived = studies.measure_finals(model, ("sql_loss", "python_loss", "pair_loss"), "val", {})
    alone = studies.measure_finals(model, ("pair_loss",), "val", {})
    assert derived["pair_loss"] == pytest.approx(alone["pair_loss"], abs=2e-6)
    assert derived["pair_loss"] == pytest.approx((derived["sql_loss"] + derived["python_loss"]) / 2, abs=2e-6)


def test_a_method_can_train_on_the_prompt_too_and_a_bad_loss_on_is_refused(checkpoints, tmp_path):
    """Method.loss_on="all" puts the prompt's tokens in the training loss (no masking): the same seed and rate
    then train differently from the default, which masks the prompt; anything else is refused up front."""
    lora = toy_study().methods[1]
    unmasked = dataclasses.replace(lora, label="unmasked", loss_on="all")
    study = toy_study(methods=(lora, unmasked), claims=())
    with pytest.raises(ValueError, match="loss_on must be one of"):
        dataclasses.replace(study, methods=(lora, dataclasses.replace(unmasked, loss_on="prompt")))
    results = studies.run(study, directory=tmp_path, checkpoints=checkpoints, progress=False)
    masked, everything = (results["runs"][m]["seeds"][0] for m in ("lora", "unmasked"))
    assert masked["curve"]["test"]["answer_loss"][0] == everything["curve"]["test"]["answer_loss"][0]  # same start
    assert masked["train_loss"] != everything["train_loss"]
    assert studies.config_hash(toy_study()) == studies.config_hash(
        toy_study(methods=tuple(dataclasses.replace(m, loss_on="response") for m in toy_study().methods)))
