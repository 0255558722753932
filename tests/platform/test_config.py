"""Experiment config: loading, inheritance, overrides, round trip and every bad-config message."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqformer.platform.config import ConfigError, load_experiment, to_yaml, validate, with_absolute_paths
from seqformer.platform.config.load import parse_yaml_text

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((REPO / "experiments").rglob("*.yaml"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_experiment_validates_and_round_trips(path, tmp_path):
    cfg = load_experiment(path)
    dumped = write(tmp_path, "resolved.yaml", to_yaml(cfg))
    assert load_experiment(dumped) == cfg


def test_official_recipe_values_survive_the_base_chain():
    cfg = load_experiment(REPO / "experiments/ytvis19/seqformer_x101_joint_12ep.yaml")
    assert cfg.model.backbone == "resnext101"
    assert cfg.data.joint_coco is True
    assert cfg.train.lr == pytest.approx(2e-4) and cfg.train.lr_drop == [4, 10]
    ablation = load_experiment(REPO / "experiments/ytvis19/seqformer_r50_ablation_12ep.yaml")
    assert ablation.train.lr_drop == [2, 10] and ablation.data.joint_coco is False


def test_overrides_apply_and_are_typed(tmp_path):
    path = write(tmp_path, "e.yaml", "name: x\ntrain:\n  lr: 0.1\n")
    cfg = load_experiment(path, ["train.lr=1e-4", "resources.num_workers=3", "train.lr_drop=[1, 2]"])
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.resources.num_workers == 3
    assert cfg.train.lr_drop == [1, 2]


def test_base_is_merged_key_by_key(tmp_path):
    write(tmp_path, "base.yaml", "name: base\ntrain:\n  lr: 0.5\n  epochs: 3\n")
    child = write(tmp_path, "child.yaml", "base: base.yaml\ntrain:\n  epochs: 7\n")
    cfg = load_experiment(child)
    assert (cfg.name, cfg.train.lr, cfg.train.epochs) == ("base", 0.5, 7)


def test_unknown_key_names_file_path_and_suggests(tmp_path):
    path = write(tmp_path, "e.yaml", "train:\n  lr_backbon: 1.0e-5\n")
    expected = r"(?s)e\.yaml.*unknown key 'train\.lr_backbon'; did you mean 'train\.lr_backbone'"
    with pytest.raises(ConfigError, match=expected):
        load_experiment(path)


def test_unknown_key_inside_model_section(tmp_path):
    path = write(tmp_path, "e.yaml", "model:\n  hiden_dim: 64\n")
    with pytest.raises(ConfigError, match=r"unknown key 'model\.hiden_dim'; did you mean 'model\.hidden_dim'"):
        load_experiment(path)


def test_unknown_section_suggests(tmp_path):
    path = write(tmp_path, "e.yaml", "trian:\n  lr: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trian'; did you mean 'train'"):
        load_experiment(path)


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, "e.yaml", "train:\n  epochs: many\n")
    with pytest.raises(ConfigError, match=r"key 'train\.epochs': .*integer.*got 'many'"):
        load_experiment(path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train:\n  lr: -0.001\n", r"train\.lr': Input should be greater than 0"),
        ("resources:\n  num_workers: 0\n", r"resources\.num_workers': Input should be greater than or equal to 1"),
        ("data:\n  crop_min: 700\n  crop_max: 600\n", r"data\.crop_min \(700\) must be <= data\.crop_max \(600\)"),
        ("data:\n  crop_prob: 1.5\n", r"data\.crop_prob': Input should be less than or equal to 1"),
        ("eval:\n  nms_iou: 0\n", r"eval\.nms_iou': Input should be greater than 0"),
        ("eval:\n  coverage_exponent: -1\n", r"eval\.coverage_exponent': Input should be greater than or equal to 0"),
    ],
)
def test_out_of_range_values(tmp_path, text, key):
    path = write(tmp_path, "e.yaml", text)
    with pytest.raises(ConfigError, match=key):
        load_experiment(path)


def test_model_post_init_error_is_reported_with_file(tmp_path):
    path = write(tmp_path, "e.yaml", "model:\n  hidden_dim: 30\n  nheads: 8\n")
    expected = r"(?s)e\.yaml: invalid experiment config:.*model\.hidden_dim must be a multiple of 32"
    with pytest.raises(ConfigError, match=expected):
        load_experiment(path)


def test_missing_base_file(tmp_path):
    path = write(tmp_path, "e.yaml", "base: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: key 'base': base file 'nowhere\.yaml' not found"):
        load_experiment(path)


def test_base_cycle(tmp_path):
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"base cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_experiment(tmp_path / "a.yaml")


@pytest.mark.parametrize("override", ["train.lr", "=3", "train..lr=1", "train.lr!=2"])
def test_bad_override_syntax(tmp_path, override):
    path = write(tmp_path, "e.yaml", "name: x\n")
    with pytest.raises(ConfigError, match=r"bad override"):
        load_experiment(path, [override])


def test_override_of_unknown_key_suggests(tmp_path):
    path = write(tmp_path, "e.yaml", "name: x\n")
    expected = r"override 'train\.lrr=1': unknown key 'train\.lrr'; did you mean 'train\.lr'"
    with pytest.raises(ConfigError, match=expected):
        load_experiment(path, ["train.lrr=1"])


def test_override_value_is_validated(tmp_path):
    path = write(tmp_path, "e.yaml", "name: x\n")
    with pytest.raises(ConfigError, match=r"key 'train\.lr': Input should be greater than 0"):
        load_experiment(path, ["train.lr=-1"])


def test_yaml_syntax_error_reports_line(tmp_path):
    path = write(tmp_path, "e.yaml", "name: x\ntrain:\n  lr: [1, 2\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"e\.yaml: YAML syntax error at line \d+, column \d+"):
        load_experiment(path)


def test_yaml_bomb_is_refused_quickly(tmp_path):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    path = write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"bomb\.yaml: line \d+: the document expands to \d+ YAML nodes"):
        load_experiment(path)


def test_many_harmless_aliases_are_fine():
    text = "base_lr: &lr 0.1\n" + "".join(f"k{i}: *lr\n" for i in range(50))
    assert parse_yaml_text(text, "ok.yaml")["k49"] == 0.1


def test_python_tags_are_not_executed():
    with pytest.raises(ConfigError, match="YAML"):
        parse_yaml_text("x: !!python/object/apply:os.system ['echo hi']\n", "evil.yaml")


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"experiment file not found: .*absent\.yaml"):
        load_experiment(tmp_path / "absent.yaml")


def test_top_level_must_be_mapping(tmp_path):
    path = write(tmp_path, "e.yaml", "- 1\n- 2\n")
    with pytest.raises(ConfigError, match=r"top level must be a mapping"):
        load_experiment(path)


def test_validate_defaults_equal_official_recipe():
    cfg = validate({})
    assert cfg.model.hidden_dim == 256 and cfg.model.num_queries == 300 and cfg.model.num_classes == 42
    assert cfg.train.clip_max_norm == pytest.approx(0.1) and cfg.train.weight_decay == pytest.approx(1e-4)


def test_with_absolute_paths_anchors_relative_paths_and_keeps_uris(tmp_path: Path) -> None:
    exp = validate(
        {
            "data": {"root": "data/train", "val_annotations": "data/val/annotations.json", "prepared_dir": "/abs/prep"},
            "train": {"init_checkpoint": "models:/seqformer@champion"},
            "resources": {"storage_path": "s3://bucket/ray_results"},
            "output_dir": "~/outs",
        }
    )
    out = with_absolute_paths(exp, tmp_path)
    assert out.data.root == str(tmp_path / "data/train")
    assert out.data.val_annotations == str(tmp_path / "data/val/annotations.json")
    assert out.data.prepared_dir == "/abs/prep"
    assert out.data.val_root is None  # unset stays unset
    assert out.train.init_checkpoint == "models:/seqformer@champion"
    assert out.resources.storage_path == "s3://bucket/ray_results"
    assert out.output_dir == str(Path("~/outs").expanduser())
    assert out.model == exp.model and out.train.lr == exp.train.lr
    assert exp.data.root == "data/train"  # the input is not changed
    local = with_absolute_paths(validate({"train": {"init_checkpoint": "weights/r50.pth"}}), tmp_path)
    assert local.train.init_checkpoint == str(tmp_path / "weights/r50.pth")


def test_fp16_autocast_without_gpus_is_refused_and_bf16_is_accepted(tmp_path):
    path = write(tmp_path, "e.yaml", "train:\n  amp: fp16\n")
    expected = r"(?s)e\.yaml: invalid experiment config:.*train\.amp: fp16 autocast runs on GPUs only.*bf16"
    with pytest.raises(ConfigError, match=expected):
        load_experiment(path)
    assert load_experiment(path, ["resources.use_gpu=true"]).train.amp == "fp16"
    assert load_experiment(write(tmp_path, "b.yaml", "train:\n  amp: bf16\n")).train.amp == "bf16"
