"""The ``seqformer`` command line: help, config show, error exits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from seqformer.platform.cli import SUBCOMMANDS, main

REPO = Path(__file__).resolve().parents[2]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert name in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_help(name, capsys):
    argv = [name, "show", "--help"] if name == "config" else [name, "--help"]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage: seqformer" in capsys.readouterr().out


def test_config_show_applies_override(capsys):
    code = main(["config", "show", str(REPO / "experiments/ytvis19/seqformer_r50_joint_12ep.yaml"), "train.lr=1e-4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "lr: 0.0001" in out and "joint_coco: true" in out


def test_config_show_bad_config_exits_nonzero_with_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr_backbon: 1\n")
    assert main(["config", "show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "unknown key 'train.lr_backbon'" in err and "did you mean" in err


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "seqformer", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "convert-checkpoint" in proc.stdout


@pytest.mark.parametrize(("flag", "value"), [("--nms-iou", "2"), ("--nms-iou", "-0.1"), ("--coverage-exponent", "-1")])
def test_infer_refuses_bad_association_flags_before_touching_any_video(tmp_path, capsys, flag, value):
    out = tmp_path / "out"
    assert main(["infer", "--model", str(tmp_path / "model.pt"), "--input", str(tmp_path), "--output", str(out),
                 "--local", flag, value]) == 2
    assert f"seqformer infer: error: {flag} must be" in capsys.readouterr().err and not out.exists()
