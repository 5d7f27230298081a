import pytest
import torch

from peftlab import gpu_check
from peftlab.gpu_check import ROWS, format_table, model_config, parse_args, precision_row, qlora_row, run_rows

CFG = model_config(64, 1, 16)


def test_model_config_defaults():
    cfg = model_config()
    assert (cfg.d_model, cfg.n_layers, cfg.max_seq_len, cfg.head_dim, cfg.d_ff) == (1024, 8, 512, 64, 2736)


def test_parse_args():
    args = parse_args(["--d-model", "512", "--rows", "bf16", "qlora"])
    assert (args.d_model, args.layers, args.seq_len, args.rows) == (512, 8, 512, ["bf16", "qlora"])
    for bad in (["--rows", "fp8"], ["--layers", "0"], ["--d-model", "100"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_main_without_cuda_exits_2(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == gpu_check.NO_CUDA_EXIT == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "nothing was run" in err


def test_precision_rows_on_cpu_account_16_bytes_per_parameter_plus_activations():
    n = sum(p.numel() for p in gpu_check.Transformer(CFG).parameters())
    for precision in ("fp32", "bf16"):
        r = precision_row(precision, CFG, 2, 16, device="cpu", repeats=1)
        assert r["accounted"] > 16 * n and r["step_s"] > 0 and r["peak"] is None and r["error"] is None
    with pytest.raises(ValueError, match="bf16"):
        precision_row("fp16", CFG, 2, 16, device="cpu")


def test_qlora_row_on_cpu_and_paged_needs_cuda():
    r = qlora_row(CFG, 2, 16, device="cpu", repeats=1)
    full = precision_row("bf16", CFG, 2, 16, device="cpu", repeats=1)
    assert r["accounted"] < full["accounted"] and r["note"] == "reference 4-bit, r=16"
    with pytest.raises(RuntimeError, match="CUDA"):
        qlora_row(CFG, 2, 16, device="cpu", paged=True)


def test_run_rows_reports_failures_and_keeps_going():
    rows = run_rows(["fp16", "fp32", "qlora-paged"], CFG, 2, 16, device="cpu", repeats=1)
    assert [r["row"] for r in rows] == ["fp16", "fp32", "qlora-paged"]
    assert rows[0]["error"].startswith("ValueError: precision='fp16' needs a CUDA GPU")
    assert rows[1]["error"] is None and rows[1]["step_s"] > 0
    assert rows[2]["error"].startswith("RuntimeError: paged_adamw needs CUDA")
    with pytest.raises(ValueError, match="rows"):
        run_rows(["fp8"], CFG, 2, 16, device="cpu")


def test_format_table():
    ok = {"row": "bf16", "method": "full", "precision": "bf16", "step_s": 0.5, "accounted": 100 * 2**20,
          "peak": 105 * 2**20, "ratio": 1.05, "memory_ok": True, "error": None, "note": ""}
    bad = {**ok, "row": "fp16", "peak": 130 * 2**20, "ratio": 1.3, "memory_ok": False}
    cpu = {**ok, "row": "fp32", "peak": None}
    failed = {"row": "qlora", "method": "qlora", "precision": "bf16", "error": "RuntimeError: no bitsandbytes"}
    lines = format_table([ok, bad, cpu, failed]).splitlines()
    assert lines[0].split(" | ")[0].strip() == "row" and len(lines) == 6
    cells = [[c.strip() for c in line.split(" | ")] for line in lines[2:]]
    assert cells[0][3:8] == ["500.0 ms", "100.0 MiB", "105.0 MiB", "1.050", "pass"]
    assert cells[1][6:8] == ["1.300", "FAIL"]
    assert cells[2][5:8] == ["n/a (CPU)", "-", "-"]
    assert cells[3][7:] == ["ERROR", "RuntimeError: no bitsandbytes"]
    assert len(lines[1]) == max(len(line) for line in lines)  # the rule spans the widest row


def test_rows_constant():
    assert ROWS == ("fp32", "bf16", "fp16", "qlora", "qlora-paged")
