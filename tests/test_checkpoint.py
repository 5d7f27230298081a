import shutil
import time

import pytest

import peftlab
from peftlab import data
from peftlab.checkpoint import CHECKPOINT_DIR, load_base, manifest


def test_shipped_checkpoint_is_small_and_hashed():
    weights = CHECKPOINT_DIR / "tiny.safetensors"
    assert weights.stat().st_size <= 10 * 2**20
    assert len(manifest("tiny")["sha256"]) == 64


def test_load_base_is_fast():
    load_base()  # warm the file cache
    t = time.perf_counter()
    load_base()
    assert time.perf_counter() - t < 1.0


def test_base_completes_pretraining_facts(base):
    assert peftlab.exact_match(base, data.fact_completion()) >= 0.90


def test_base_does_not_know_the_qa_format(base):
    assert peftlab.exact_match(base, data.qa_task()["test"]) <= 0.20


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"available: \['teacher', 'tiny'\]"):
        load_base("huge")


def test_corrupted_checkpoint_is_refused(tmp_path):
    for suffix in (".json", ".safetensors"):
        shutil.copy(CHECKPOINT_DIR / f"tiny{suffix}", tmp_path / f"tiny{suffix}")
    raw = bytearray((tmp_path / "tiny.safetensors").read_bytes())
    raw[-100] ^= 0xFF
    (tmp_path / "tiny.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupted"):
        load_base("tiny", directory=tmp_path)


def test_checkpoint_mismatching_its_config_is_refused(tmp_path):
    import json

    from peftlab.checkpoint import sha256_file
    shutil.copy(CHECKPOINT_DIR / "tiny.safetensors", tmp_path / "tiny.safetensors")
    m = manifest("tiny")
    m["config"]["d_ff"] = 512
    m["sha256"] = sha256_file(tmp_path / "tiny.safetensors")
    (tmp_path / "tiny.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="does not match its config"):
        load_base("tiny", directory=tmp_path)


def test_qa_fine_tuning_on_half_the_people_answers_the_other_half(base):
    """Knowledge from pre-training, format from fine-tuning: the demonstration notebook 10 builds on."""
    from peftlab.train import train
    qa = data.qa_task()
    train(base, qa["train"], steps=60, lr=1e-4, batch_size=16, progress=False)
    assert peftlab.exact_match(base, qa["test"]) >= 0.70
    assert peftlab.exact_match(base, data.stranger_qa()) <= 0.20  # people it never read about
