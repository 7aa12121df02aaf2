"""The command line: a results table, a saved model that round-trips, one-line errors."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from pruning.__main__ import main

SMALL = ["--nsamples", "4", "--seqlen", "64", "--eval-tokens", "512"]


def test_table_has_a_row_per_run(capsys):
    assert (
        main(["--method", "magnitude,wanda", "--sparsity", "0.5,2:4", "--mode", "dense", *SMALL])
        == 0
    )
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[:2] for r in rows] == [
        ["dense", "0%"],
        ["magnitude", "50%"],
        ["magnitude", "2:4"],
        ["wanda", "50%"],
        ["wanda", "2:4"],
    ]
    assert all(float(r[3]) == pytest.approx(0.5, abs=1e-3) for r in rows[1:])


def test_save_round_trips_with_transformers(tmp_path, capsys):
    out = tmp_path / "pruned"
    assert main(["--method", "wanda", "--sparsity", "0.5", "--save", str(out), *SMALL]) == 0
    report = json.loads((out / "pruning_report.json").read_text())
    assert (out / "model.safetensors").exists() and "wanda" in (out / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(out)
    W = model.model.layers[3].mlp.down_proj.weight
    assert (W == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)
    assert report["result"]["achieved"] == pytest.approx(0.5, abs=1e-3)


def test_dtype_reaches_the_model(tmp_path):
    out = tmp_path / "bf16"
    argv = ["--method", "magnitude", "--dtype", "bfloat16", *SMALL, "--eval-tokens", "128"]
    assert main([*argv, "--save", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--method", "nope"], "unknown method"),
        (["--sparsity", "1.2"], "[0, 1)"),
        (["--sparsity", "3:7", "--method", "magnitude"], "divisible by 7"),
        (["--sparsity", "2:4", "--method", "wanda,magnitude", "--save", "/tmp/x"], "single"),
        (["-o", "percdamp"], "KEY=VALUE"),
        (["--method", "sparsegpt", "-o", "bogus=1"], "no option 'bogus'"),
        (["--text-file", "/nonexistent/file.txt"], "cannot read"),
        (["--seqlen", "9000", "--method", "magnitude"], "8192 positions"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, words, capsys):
    assert main([*SMALL, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and words in err and "\n" not in err
