"""The option table and the ATC argument builder: exact argument lists and every rejection."""

from __future__ import annotations

from pathlib import Path

import pytest

from ascend_mlops import cli
from ascend_mlops.api import catalog, contract
from ascend_mlops.ascend import atc
from ascend_mlops.workloads.converter import options, templates
from ascend_mlops.workloads.converter.options import OptionError

SEED = templates.get(catalog.TEMPLATE_SEED)
DYNAMIC = templates.get(catalog.TEMPLATE_DYNAMIC_BATCH)
MODEL = "/mnt/output/V001/frozen_graph/frozen_graph.pb"
OUT = "/mnt/output/V001/om/model"


def test_seed_template_builds_the_modelarts_atc_command() -> None:
    conversion = options.build(SEED, {}, MODEL, OUT)
    assert list(conversion.atc_args) == [
        f"--model={MODEL}",
        "--framework=3",
        f"--output={OUT}/model",
        "--soc_version=Ascend310",
        "--input_shape=images:1,224,224,3",
        "--input_format=NHWC",
        "--out_nodes=logits:0",
        "--output_type=FP32",
        "--op_select_implmode=high_performance",
        "--buffer_optimize=l2_optimize",
    ]
    assert conversion.command_line.startswith("atc --model=")
    assert dict(conversion.options) == {
        "inputShape": "images:1,224,224,3",
        "inputFormat": "NHWC",
        "outNodes": "logits:0",
        "outputType": "FP32",
        "highPrecision": "0",
        "l2Optimize": "true",
        "preferredDataFormat": "5D",
    }


def test_seed_template_with_every_option_overridden() -> None:
    overrides = {
        "inputShape": "images:1,32,32,3",
        "inputFormat": "nhwc",
        "outNodes": "logits:0",
        "outputType": "fp16",
        "preferredDataFormat": "5D",
        "highPrecision": "1",
        "precisionMode": "allow_mix_precision",
        "l2Optimize": "false",
        "log": "error",
    }
    conversion = options.build(SEED, overrides, MODEL, OUT)
    assert list(conversion.atc_args) == [
        f"--model={MODEL}",
        "--framework=3",
        f"--output={OUT}/model",
        "--soc_version=Ascend310",
        "--input_shape=images:1,32,32,3",
        "--input_format=NHWC",
        "--out_nodes=logits:0",
        "--output_type=FP16",
        "--precision_mode=allow_mix_precision",
        "--op_select_implmode=high_precision",
        "--buffer_optimize=off_optimize",
        "--log=error",
    ]


def test_dynamic_batch_template_builds_dynamic_batch_flags() -> None:
    conversion = options.build(DYNAMIC, {"inputShape": "images:-1,32,32,3", "dynamicBatchSizes": "1, 2,4,8,16"}, MODEL, OUT)
    assert list(conversion.atc_args) == [
        f"--model={MODEL}",
        "--framework=3",
        f"--output={OUT}/model",
        "--soc_version=Ascend310",
        "--input_shape=images:-1,32,32,3",
        "--input_format=NHWC",
        "--out_nodes=logits:0",
        "--output_type=FP32",
        "--dynamic_batch_size=1,2,4,8,16",
        "--op_select_implmode=high_performance",
        "--buffer_optimize=l2_optimize",
    ]
    assert conversion.command.dynamic_batch_size == (1, 2, 4, 8, 16)
    assert options.build(DYNAMIC, {}, MODEL, OUT).command.dynamic_batch_size == (1, 2, 4, 8)


def test_booleans_accept_true_false_and_one_zero() -> None:
    for text, mode in [("1", "high_precision"), ("true", "high_precision"), ("0", "high_performance"), ("False", "high_performance")]:
        args = options.build(SEED, {"highPrecision": text}, MODEL, OUT).atc_args
        assert f"--op_select_implmode={mode}" in args
    for text, mode in [("true", "l2_optimize"), ("1", "l2_optimize"), ("false", "off_optimize"), ("0", "off_optimize")]:
        args = options.build(SEED, {"l2Optimize": text}, MODEL, OUT).atc_args
        assert f"--buffer_optimize={mode}" in args


def test_the_table_covers_exactly_the_catalog_options_and_marks_the_three_inferred() -> None:
    assert [m.option for m in options.OPTION_TABLE] and set(options.OPTIONS) == set(catalog.CONVERSION_OPTIONS)
    assert {m.option for m in options.OPTION_TABLE if m.inferred} == {"highPrecision", "l2Optimize", "preferredDataFormat"}
    assert options.OPTIONS["preferredDataFormat"].flag is None
    assert set(templates.TEMPLATES) == set(catalog.TEMPLATES)


INVALID = [
    # (template, option, value, words the message must contain)
    (SEED, "inputShape", "images:1,224,224", None),  # valid syntax: checked against the graph later
    (SEED, "inputShape", "images", "NODE:DIMS"),
    (SEED, "inputShape", "images:1,a,224,3", "'a' is not an integer"),
    (SEED, "inputShape", "images:1,0,224,3", "dimension 0"),
    (SEED, "inputShape", "images:1,-2,224,3", "dimension -2"),
    (SEED, "inputShape", "images:2,224,224,3", "only allows batch 1"),
    (SEED, "inputShape", "images:-1,224,224,3", "only allows batch 1"),
    (SEED, "inputShape", "", "empty"),
    (SEED, "inputFormat", "NHCW", "NCHW, NHWC"),
    (SEED, "outNodes", "logits", "NODE:INDEX"),
    (SEED, "outNodes", "logits:x", "NODE:INDEX"),
    (SEED, "outputType", "FP64", "FP32, FP16, UINT8"),
    (SEED, "preferredDataFormat", "4D", "only 5D"),
    (SEED, "highPrecision", "2", "true or false"),
    (SEED, "l2Optimize", "maybe", "true or false"),
    (SEED, "precisionMode", "fast", "force_fp16"),
    (SEED, "log", "loud", "debug, info"),
    (SEED, "dynamicBatchSizes", "1,2,4", "takes one fixed batch"),
    (DYNAMIC, "dynamicBatchSizes", "4", "at least 2"),
    (DYNAMIC, "dynamicBatchSizes", ",".join(str(i) for i in range(1, 102)), "at most 100"),
    (DYNAMIC, "dynamicBatchSizes", "1,4096", "maximum 2048"),
    (DYNAMIC, "dynamicBatchSizes", "0,2", "greater than 0"),
    (DYNAMIC, "dynamicBatchSizes", "1,two", "'two' is not an integer"),
    (DYNAMIC, "dynamicBatchSizes", "2,2", "distinct"),
    (DYNAMIC, "inputShape", "images:1,224,224,3", "batch axis of the input must be -1"),
    (DYNAMIC, "inputShape", "images:-1,-1,224,3", "only the batch axis"),
]


@pytest.mark.parametrize(("template", "option", "value", "words"), INVALID, ids=[f"{t.name[-5:]}-{o}={v[:20]}" for t, o, v, _ in INVALID])
def test_each_invalid_option_is_rejected_naming_option_and_value(
    template: templates.Template, option: str, value: str, words: str | None
) -> None:
    if words is None:
        options.build(template, {option: value}, MODEL, OUT)  # a rank mismatch is the graph check's job
        return
    with pytest.raises(OptionError) as caught:
        options.build(template, {option: value}, MODEL, OUT)
    message = str(caught.value)
    assert caught.value.option == option
    assert f"{option}={value!r}" in message
    assert words in message


def test_set_arguments_are_parsed_and_unknown_names_rejected() -> None:
    assert options.parse_set_arguments(["inputShape=images:1,8,8,3", "l2Optimize=false"]) == {
        "inputShape": "images:1,8,8,3",
        "l2Optimize": "false",
    }
    with pytest.raises(OptionError, match=r"inputshape='x'.*unknown option; known options: inputShape"):
        options.parse_set_arguments(["inputshape=x"])
    with pytest.raises(OptionError, match="NAME=VALUE"):
        options.parse_set_arguments(["inputShape"])


def test_unknown_template_names_the_available_ones() -> None:
    with pytest.raises(templates.UnknownTemplate, match=f"'nope'.*{catalog.TEMPLATE_SEED}"):
        templates.get("nope")


def test_atc_flag_parsing_accepts_atc_syntax() -> None:
    flags = atc.parse_argv(["--model=a.pb", "--framework", "3", "-output=out/model", "--soc_version=Ascend310"])
    assert flags == {"model": "a.pb", "framework": "3", "output": "out/model", "soc_version": "Ascend310"}
    command = atc.validate_flags(flags)
    assert command.om_path == "out/model.om"
    with pytest.raises(atc.AtcError) as caught:
        atc.validate_flags({"model": "a.pb", "framework": "3", "output": "o"})
    assert caught.value.code == "E10007" and "--soc_version is required" in str(caught.value)
    with pytest.raises(atc.AtcError, match="only 3"):
        atc.validate_flags({**flags, "framework": "5"})
    with pytest.raises(atc.AtcError, match="unknown flag --weight"):
        atc.validate_flags({**flags, "weight": "w"})


def test_error_codes_are_extracted_in_order() -> None:
    text = "ATC run failed\nE10016: opname foo\nE10016 again\n[ERROR] EZ9999: internal\nE19010 and version E1.2"
    assert atc.extract_error_codes(text) == ["E10016", "EZ9999", "E19010"]


def run_convert(args: list[str]) -> int:
    return cli.main([contract.CMD_CONVERT, *args])


def test_print_command_prints_the_atc_command_without_running(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_convert([
        contract.FLAG_TEMPLATE, catalog.TEMPLATE_DYNAMIC_BATCH,
        contract.FLAG_INPUT, "/mnt/output/V001/frozen_graph",
        contract.FLAG_OUTPUT, OUT,
        contract.FLAG_SET, "inputShape=images:-1,64,64,3",
        contract.FLAG_PRINT_COMMAND,
    ])
    assert code == 0
    assert capsys.readouterr().out.strip() == (
        f"atc {'--model=/mnt/output/V001/frozen_graph/frozen_graph.pb'} --framework=3 --output={OUT}/model "
        "--soc_version=Ascend310 --input_shape=images:-1,64,64,3 --input_format=NHWC --out_nodes=logits:0 "
        "--output_type=FP32 --dynamic_batch_size=1,2,4,8 --op_select_implmode=high_performance "
        "--buffer_optimize=l2_optimize"
    )


def test_operator_built_command_line_is_accepted(capsys: pytest.CaptureFixture[str]) -> None:
    """contract.convert_args (what the operator runs) parses and builds the same command."""
    args = contract.convert_args(
        template=catalog.TEMPLATE_SEED,
        input_path="/mnt/output/V001/frozen_graph",
        output=OUT,
        options={"inputShape": "images:1,224,224,3", "l2Optimize": False, "highPrecision": 1},
    )
    assert args[0] == contract.CMD_CONVERT
    assert cli.main([*args, contract.FLAG_PRINT_COMMAND]) == 0
    out = capsys.readouterr().out
    assert "--buffer_optimize=off_optimize" in out and "--op_select_implmode=high_precision" in out


def test_the_documented_option_table_is_the_code_table() -> None:
    root = Path(__file__).resolve().parents[3]
    table = options.markdown_table(SEED.defaults)
    doc = (root / "docs" / "converter.md").read_text()
    assert table in doc, "regenerate the table in docs/converter.md with options.markdown_table()"
