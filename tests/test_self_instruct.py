import math

import pytest
import torch
from torch import nn

from peftlab.data import Instruction
from peftlab.model import ModelConfig, Transformer
from peftlab.instruct import RULES, training_records
from peftlab.self_instruct import check_tokenizers, family_of, judge, parse_task, rule_output, seed_tasks, self_instruct
from peftlab.teacher import RECIPE, teacher_examples, teacher_tasks
from peftlab.tokenizer import EOS, ByteTokenizer

SEEDS = seed_tasks()


class ScriptedTeacher(nn.Module):
    """Writes the given continuations, one per row in turn; counts its generate calls."""

    def __init__(self, texts: list[str], vocab_size: int = 259):
        super().__init__()
        self.config = ModelConfig(vocab_size=vocab_size)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.texts, self.calls, self.i = texts, 0, 0

    def generate(self, ids, max_new_tokens, **kw):
        self.calls += 1
        rows = []
        for _ in range(ids.shape[0]):
            tail = ByteTokenizer().encode(self.texts[self.i % len(self.texts)]) + [EOS]
            self.i += 1
            rows.append(tail + [EOS] * (max_new_tokens - len(tail)))
        return torch.cat([ids, torch.tensor(rows)], dim=1)


def test_seed_pool_covers_every_family():
    assert len(SEEDS) == 21 and len({s.family for s in SEEDS}) == 7


@pytest.mark.parametrize("threshold", [0, -0.1, 1.01, 7, "0.7"])
def test_threshold_outside_unit_interval_is_rejected_before_generating(threshold):
    teacher = ScriptedTeacher([" x"])
    with pytest.raises(ValueError, match="threshold"):
        self_instruct(teacher, SEEDS, n=2, threshold=threshold)
    assert teacher.calls == 0


def test_teacher_with_another_tokenizer_is_rejected_before_generating():
    teacher, student = ScriptedTeacher([" x"], vocab_size=300), ScriptedTeacher([" x"])
    with pytest.raises(ValueError, match="tokenizer"):
        self_instruct(teacher, SEEDS, n=2, student=student)
    assert teacher.calls == 0
    check_tokenizers(ScriptedTeacher([" x"]), Transformer(ModelConfig(d_model=32, n_layers=1, n_heads=2, d_ff=32)))


def test_parse_family_and_rules():
    t = parse_task(" Write the word in reverse.\nInput: tiger\nOutput: regit\n")
    assert (t.family, t.instruction, t.input, t.output) == ("reverse", "Write the word in reverse.", "tiger", "regit")
    assert parse_task(" no fields here") is None
    assert family_of("Paint the fence green.") is None
    assert rule_output("sort", "b c a") == "a b c"
    assert rule_output("fact_qa", "Where does Tevel live?") == "Ostrel"  # data.world()[0]
    assert rule_output("fact_qa", "Where does Nobody live?") is None
    assert rule_output(None, "x") is None


def test_judge_each_stage():
    pool = list(SEEDS)
    reverse = SEEDS[0].instruction
    assert judge(None, pool) == ("generated", "malformed: not Task/Input/Output")
    assert judge(Instruction("reverse", reverse, "tiger", ""), pool)[0] == "generated"
    # identical instruction, new input: a new instance of a pooled instruction
    assert judge(Instruction("reverse", reverse, "tiger", "regit"), pool) == ("correct", "kept")
    stage, verdict = judge(Instruction("reverse", reverse, SEEDS[0].input, SEEDS[0].output), pool)
    assert stage == "well-formed" and verdict.startswith("duplicate instance")
    stage, verdict = judge(Instruction("reverse", "Reverse the letters of a word.", "tiger", "regit"), pool)
    assert stage == "well-formed" and "near-duplicate" in verdict  # ROUGE-L 6/6 tokens but one differs: 0.83
    stage, verdict = judge(Instruction("reverse", "Write the word in reverse.", "tiger", "tiger"), pool)
    assert stage == "novel" and "rule says 'regit'" in verdict
    assert judge(Instruction("reverse", "Write the word in reverse.", "tiger", "regit"), pool, threshold=0.2)[0] \
        == "well-formed"  # a strict threshold drops it as a near-duplicate


def test_funnel_counts_each_stage_and_pool_grows():
    texts = [" Write the word in reverse.\nInput: tiger\nOutput: regit\n",     # new instruction, correct
             " Write the word in reverse.\nInput: tiger\nOutput: regit\n",     # duplicate instance
             " Write the word in reverse.\nInput: wagon\nOutput: wagon\n",     # wrong output
             " Reverse the letters of the words.\nInput: zebra\nOutput: arbez\n",  # near-duplicate
             " garbage"]                                                      # malformed
    teacher = ScriptedTeacher(texts)
    r = self_instruct(teacher, SEEDS, n=5, batch_size=5, max_new_tokens=80, greedy_output=False)
    assert r.funnel() == {"generated": 5, "well-formed": 4, "novel": 2, "correct": 1}
    assert [g.verdict == "kept" for g in r.generations] == [True, False, False, False, False]
    assert len(r.kept) == 1 and len(r.unfiltered) == 4
    assert teacher.calls == 1


def test_teacher_data_has_outputs_and_extra_wordings():
    tasks = teacher_tasks()
    assert len({t.instruction for t in tasks}) > len({t.family for t in tasks})
    examples = teacher_examples(tasks)
    assert all(e.prompt.endswith("Task:") and "\nOutput: " in e.response for e in examples)
    assert all(len(e.text.encode()) <= 192 for e in examples)


def test_refilter_with_a_looser_threshold_keeps_more():
    from peftlab.explore.self_instruct import FunnelExplorer
    from peftlab.self_instruct import refilter
    texts = [" Write the word in reverse.\nInput: tiger\nOutput: regit\n",
             " Write the word in reverse form.\nInput: zebra\nOutput: arbez\n"]  # ROUGE-L 0.91 to the first
    r = self_instruct(ScriptedTeacher(texts), SEEDS, n=2, batch_size=2, max_new_tokens=80, greedy_output=False)
    assert r.funnel()["correct"] == 1
    assert refilter(r, 1.0).funnel()["correct"] == 2
    assert FunnelExplorer(r).funnel(1.0) == {"generated": 2, "well-formed": 2, "novel": 2, "correct": 2}
    with pytest.raises(ValueError, match="threshold"):
        refilter(r, 0)


def test_unverifiable_task_is_dropped_unless_allowed():
    task = Instruction("unknown", "Paint the fence green.", "fence", "green fence")
    assert judge(task, SEEDS) == ("novel", "unverifiable: no family rule matches the instruction")
    assert judge(task, SEEDS, require_rule=False) == ("correct", "kept")


def test_teacher_records_add_inputs_but_never_a_held_out_one():
    from peftlab.instruct import heldout_suite
    from peftlab.teacher import heldout_inputs, teacher_records
    records = teacher_records(per_family=50)
    assert len(records) > len(training_records())
    assert not {(r.family, r.input) for r in records} & heldout_inputs()
    assert not {(r.family, r.input) for r in records} & {(r.family, r.input) for r in heldout_suite(per_family=16)["new inputs"]}
    assert all(r.output == RULES[r.family](r.input) for r in records if r.family in RULES)


def test_made_up_words_are_never_real_ones_and_feed_the_teacher():
    from peftlab.data import WORDS
    from peftlab.teacher import TEACHER_VOCABULARY, pseudo_words, teacher_records
    PSEUDO_WORDS = pseudo_words()
    assert len(PSEUDO_WORDS) > 4000 and not set(PSEUDO_WORDS) & (set(TEACHER_VOCABULARY) | set(WORDS))
    added = teacher_records(per_family=200)[len(training_records(facts_per_family=10_000)):]
    words = [w for r in added if r.family in ("reverse", "repeat", "count") for w in r.input.split()]
    made_up = sum(w in PSEUDO_WORDS for w in words) / len(words)
    assert 0.6 <= made_up <= 0.95  # pseudo=0.7 of the draws, more once the unused real words run out
    assert not any(w in PSEUDO_WORDS for r in teacher_records(per_family=50, pseudo=0.0) for w in r.input.split())


def test_shipped_teacher_loads_with_its_hash_checked_and_matches_the_base_config():
    from peftlab.checkpoint import load_base, manifest, sha256_file, CHECKPOINT_DIR
    info = manifest("teacher")
    assert sha256_file(CHECKPOINT_DIR / "teacher.safetensors") == info["sha256"]
    assert info["config"] == manifest("tiny")["config"]
    assert info["teacher"]["steps"] == RECIPE.steps and info["teacher"]["seed"] == 0
    teacher = load_base("teacher")
    check_tokenizers(teacher, load_base())


def test_shipped_teacher_follows_trained_instructions_on_new_words():
    from peftlab.checkpoint import load_base, manifest
    from peftlab.evaluate import greedy_accuracy
    from peftlab.instruct import instruct_sets
    # measured by `python -m peftlab.teacher --measure` on 240 held-out records (words of 4 to 9 letters that no
    # training set holds): 19.6% (count 77.5%, first_letters 27.5%, repeat 10%, uppercase 2.5%, reverse and sort
    # 0%), against 2.9% for the constant answer per family; the old 100% on count came from 6-letter test words
    teacher, test = load_base("teacher"), instruct_sets()["test"]
    metrics = manifest("teacher")["metrics"]
    count = [e for e in test if e.meta["family"] == "count"]
    assert greedy_accuracy(teacher, count) == metrics["new_inputs_per_family"]["count"] >= 0.6
    assert metrics["new_inputs_exact_match"] > 5 * metrics["constant_answer_exact_match"]


def test_shipped_teacher_manifest_records_its_funnel():
    from peftlab.checkpoint import manifest
    funnel = manifest("teacher")["metrics"]["self_instruct_funnel"]
    assert list(funnel) == ["generated", "well-formed", "novel", "correct"]
    assert funnel["generated"] >= funnel["well-formed"] >= funnel["novel"] >= funnel["correct"] >= 10


def test_greedy_output_replaces_only_the_sampled_answer():
    from peftlab.self_instruct import answer_greedily
    sampled = [" Write the word in reverse.\nInput: tiger\nOutput: tigre\n", " no output line"]
    teacher = ScriptedTeacher([" regit\n"])
    out = answer_greedily(teacher, "Write a new task.\nTask:", sampled)
    assert out == [" Write the word in reverse.\nInput: tiger\nOutput: regit\n", " no output line"]
    assert teacher.calls == 1


def test_each_filter_can_be_switched_off_on_its_own():
    pool = list(SEEDS)
    near = Instruction("reverse", "Reverse the letters of a word.", "tiger", "regit")  # a near-duplicate
    wrong = Instruction("reverse", "Write the word in reverse.", "tiger", "tiger")  # novel, wrong output
    assert judge(near, pool)[1].startswith("near-duplicate")
    assert judge(near, pool, novelty=False) == ("correct", "kept")
    assert judge(wrong, pool)[0] == "novel"
    assert judge(wrong, pool, correctness=False) == ("correct", "kept")
    assert judge(near, pool, correctness=False)[1].startswith("near-duplicate")  # the other filter still works
    assert judge(None, pool, novelty=False, correctness=False)[1].startswith("malformed")  # form is always checked


def test_seed_tasks_vary_their_inputs_and_diversity_measures():
    from peftlab.self_instruct import nearest_seed, verb_noun
    for family in {t.family for t in SEEDS}:
        inputs = [t.input for t in SEEDS if t.family == family]
        assert len(inputs) == 3 and len({len(x) for x in inputs}) == 3, family
    assert nearest_seed(SEEDS[:2], SEEDS) == [1.0, 1.0]
    assert verb_noun("Sort the words in alphabetical order.") == ("sort", "words")
    assert verb_noun("Write the text in capital letters.") == ("write", "text")
    with pytest.raises(ValueError, match="instruction must hold at least one word"):
        verb_noun("...")


def test_study_pool_is_the_live_run_extended_and_gives_the_declared_sets():
    from peftlab.checkpoint import load_base
    from peftlab.self_instruct import STUDENTS, student_tasks, study_pool
    from peftlab.studies import self_instruct_students as study
    live = self_instruct(load_base("teacher"), SEEDS, n=128, batch_size=32, seed=0)  # notebook 19's run
    assert [g.text for g in live.generations] == [g.text for g in study_pool().generations[:128]]
    sizes = {name: len(student_tasks(name)) for name in STUDENTS}
    assert sizes == study.SIZES  # the study's steps are 20 epochs of these
    assert [m.steps for m in study.STUDY.methods] == [math.ceil(study.EPOCHS * n / study.BATCH) for n in sizes.values()]
    with pytest.raises(ValueError, match="name must be one of"):
        student_tasks("everything")
