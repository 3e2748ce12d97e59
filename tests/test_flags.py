"""One meaning per flag across the commands: --classes is a comma list, --class-list a list name or
file, --threshold labels images, --model a model file; old spellings work for a release, with a note."""

from __future__ import annotations

import argparse

import pytest

from taidpt.export.onnx_cli import zero_shot_classes


def _onnx_args(classes: str = "", class_list: str = "") -> argparse.Namespace:
    return argparse.Namespace(classes=classes, class_list=class_list)


def test_export_onnx_classes_is_a_comma_list_and_class_list_a_name_or_file(tmp_path, capsys):
    listed = tmp_path / "mine.txt"
    listed.write_text("forklift\npallet\n", encoding="utf-8")
    assert zero_shot_classes(_onnx_args(classes="cat, dog")) == ["cat", "dog"]
    assert zero_shot_classes(_onnx_args(class_list=str(listed))) == str(listed)
    assert zero_shot_classes(_onnx_args(class_list="voc2007")) == "voc2007"
    assert capsys.readouterr().err == ""
    assert zero_shot_classes(_onnx_args(classes="cat")) == ["cat"]  # one name, not a list's name


@pytest.mark.parametrize("old", ["voc2007", "FILE"])
def test_the_old_export_onnx_classes_spelling_still_works_with_a_note(old, tmp_path, capsys):
    if old == "FILE":
        old = str(tmp_path / "mine.txt")
        (tmp_path / "mine.txt").write_text("forklift\n", encoding="utf-8")
    assert zero_shot_classes(_onnx_args(classes=old)) == old
    err = capsys.readouterr().err
    assert "deprecated" in err and "--class-list" in err


def test_export_onnx_refuses_both_and_bad_names(tmp_path, capsys):
    from taidpt.export.onnx_cli import main

    out = tmp_path / "m.onnx"
    for args, expect in ((["--classes", "a,b", "--class-list", "voc2007"], "not both"),
                         (["--classes", "cat,,dog"], "empty")):
        assert main(["--trainer", "ZeroshotCLIPDense", *args, "--output", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err
    assert not out.exists()


def test_a_zero_shot_export_takes_comma_separated_classes(tiny_rn_openai_file, tmp_path, capsys):
    from taidpt.export.onnx_cli import main
    from taidpt.serve.metadata import read_onnx_metadata

    out = tmp_path / "zs.onnx"
    assert main(["--trainer", "ZeroshotCLIPDense", "--classes", "cat,dog,zebra", "--output", str(out),
                 "--batch-sizes", "1", "MODEL.BACKBONE.NAME", "TinyRN", "MODEL.BACKBONE.PRETRAINED",
                 str(tiny_rn_openai_file), "INPUT.SIZE", "(64, 64)"]) == 0
    assert read_onnx_metadata(out).classnames == ("cat", "dog", "zebra")


def test_evaluate_metric_threshold_and_its_old_spelling(capsys):
    from taidpt.export.evaluate import build_parser

    base = ["--model", "m.onnx", "--dataset-config-file", "d.yaml"]
    assert build_parser().parse_args([*base, "--metric-threshold", "0.25"]).metric_threshold == 0.25
    assert capsys.readouterr().err == ""
    assert build_parser().parse_args([*base, "--threshold", "0.25"]).metric_threshold == 0.25
    assert "--threshold is deprecated" in capsys.readouterr().err


def test_triton_client_model_name_and_its_old_spelling(capsys):
    from taidpt.serve.triton_client import build_parser

    assert build_parser().parse_args(["--model-name", "m1", "--images", "x"]).model_name == "m1"
    assert build_parser().parse_args(["--images", "x"]).model_name == "taidpt"
    assert capsys.readouterr().err == ""
    assert build_parser().parse_args(["--model", "m1", "--images", "x"]).model_name == "m1"
    assert "use --model-name" in capsys.readouterr().err
