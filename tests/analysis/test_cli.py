"""``cnnlab analyze``: every target kind, every format, and one line + exit 2 for bad input."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from cnnlab.cli import main


def _run(capsys, *argv):
    code = main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_has_the_issue_keys(capsys, exercises):
    code, out, err = _run(capsys, exercises / "two_conv_layers.yaml", "--format", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    for key in ("layers", "total_params", "trainable_params", "total_macs", "receptive_field"):
        assert key in doc
    row = doc["layers"][1]
    for key in ("name", "type", "output_shape", "params", "trainable_params", "macs",
                "receptive_field", "jump"):
        assert key in row
    assert row["output_shape"] == [32, 28, 28] and row["receptive_field"] == [5, 5]
    assert doc["total_params"] == 5088 and doc["receptive_field"] == [5, 5]
    assert doc["total_flops"] == 2 * doc["total_macs"]
    assert doc["not_counted"] == {} and doc["warnings"] == []


def test_csv_and_markdown(capsys, exercises):
    code, out, _ = _run(capsys, exercises / "grayscale_128.yaml", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 9 and rows[-1]["name"] == "TOTAL"
    assert rows[-1]["params"] == "184003" and rows[0]["output_shape"] == "32x120x120"
    code, out, _ = _run(capsys, exercises / "grayscale_128.yaml", "--format", "markdown")
    assert code == 0 and out.startswith("| Layer | Type |") and "params: 184,003" in out


def test_table_shows_rows_totals_and_not_counted(capsys, exercises):
    code, out, _ = _run(capsys, exercises / "inception_resnet_a.yaml")
    assert code == 0
    assert "b2_3x3b" in out and "params: 52,960" in out
    assert "not counted: nothing" in out


def test_torchvision_target_uses_its_default_input(capsys):
    code, out, _ = _run(capsys, "torchvision:resnet18", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["input_shape"] == [3, 224, 224]
    # torchvision's, torchinfo's and the paper's count; BN running statistics are buffers
    assert doc["total_params"] == doc["trainable_params"] == 11_689_512
    assert doc["buffers"] == 9_620 and doc["params_convention"] == "pytorch"


def test_callable_target_and_batch(capsys):
    code, out, _ = _run(capsys, "torchvision.models:squeezenet1_0", "--input", "3,64,64",
                        "--batch", "2", "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["batch"] == 2 and doc["source"] == "torchvision.models:squeezenet1_0"
    assert doc["layers"][0]["output_shape"] == [96, 29, 29]


def test_cnnlab_model_names(capsys):
    import torch

    import cnnlab.models as models
    from cnnlab.analysis import analyze

    for name in ("resnet20", "mobilenet_v2_cifar"):
        model = models.create(name)
        a = analyze(name)
        assert a.input_shape == tuple(models.model_info(name).default_input)
        assert a.totals["trainable_params"] == sum(p.numel() for p in model.parameters())
        assert a.not_counted == {}
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model.eval()(torch.zeros(1, *a.input_shape))
        assert a.totals["total_macs"] == counter.get_total_flops() // 2
    # He et al. (2016), Table 6: ResNet-20 has 0.27M parameters
    assert round(analyze("resnet20").totals["trainable_params"] / 1e6, 2) == 0.27
    # ImageNet-size models are analysed at the paper's 1000 classes: Howard et al. (2017),
    # Table 6: MobileNetV1 1.0 has 4.2M parameters and 569M Mult-Adds at 224x224
    v1 = analyze("mobilenet_v1")
    assert v1.input_shape == (3, 224, 224) and v1.output_layer.output_shape == (1000,)
    assert round(v1.totals["trainable_params"] / 1e6, 1) == 4.2
    assert round(v1.totals["total_macs"] / 1e6) in (569, 570)  # the FC layer adds 1.02M


def test_impossible_layer_prints_the_partial_table_then_one_error_line(capsys, exercises):
    code, out, err = _run(capsys, exercises / "dilated_stack.yaml")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cnnlab: error: layer 'conv2d_5' (Conv2D)")
    assert "conv2d_4" in out and "(256, 11, 11)" in out  # the rows before the bad layer


def _spec(tmp_path, text, name="bad.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


BAD_SPECS = {
    "unknown type": ("input: [3, 8, 8]\nlayers:\n  - {type: Conv2d, filters: 4, kernel_size: 3}\n",
                     "unknown layer type 'Conv2d'"),
    "unknown argument": ("input: [3, 8, 8]\nlayers:\n  - {type: Conv2D, filter: 4, kernel_size: 3}\n",
                         "unknown argument 'filter'"),
    "missing argument": ("input: [3, 8, 8]\nlayers:\n  - {type: Conv2D, kernel_size: 3}\n",
                         "missing required argument 'filters'"),
    "kernel too large": ("input: [3, 8, 8]\nlayers:\n  - {type: Conv2D, filters: 4, kernel_size: 3, "
                         "dilation_rate: 4}\n", "effective kernel 9 (kernel 3, dilation 4) is larger"),
    "add shapes": ("input: [3, 8, 8]\nlayers:\n  - {name: a, type: Conv2D, filters: 4, kernel_size: 3}\n"
                   "  - {name: b, type: Conv2D, filters: 4, kernel_size: 1, inputs: [input]}\n"
                   "  - {type: Add, inputs: [a, b]}\n", "Add needs inputs of equal shape"),
    "concat sizes": ("input: [3, 8, 8]\nlayers:\n  - {name: a, type: Conv2D, filters: 4, kernel_size: 3}\n"
                     "  - {type: Concatenate, inputs: [a, input]}\n", "equal spatial size"),
    "unknown input": ("input: [3, 8, 8]\nlayers:\n  - {type: ReLU, inputs: [nowhere]}\n",
                      "input 'nowhere' is not defined before this layer"),
    "cycle": ("input: [3, 8, 8]\nlayers:\n  - {name: a, type: ReLU, inputs: [b]}\n"
              "  - {name: b, type: ReLU, inputs: [a]}\n", "cycles cannot be written"),
    "dense on image": ("input: [3, 8, 8]\nlayers:\n  - {type: Dense, units: 4}\n", "Dense needs a flat input"),
    "bad padding": ("input: [3, 8, 8]\nlayers:\n  - {type: Conv2D, filters: 4, kernel_size: 3, "
                    "padding: full}\n", "padding must be"),
    "lc same": ("input: [3, 8, 8]\nlayers:\n  - {type: LocallyConnected2D, filters: 4, kernel_size: 3, "
                "padding: same}\n", "only padding 'valid'"),
    "groups": ("input: [3, 8, 8]\nlayers:\n  - {type: Conv2D, filters: 4, kernel_size: 3, groups: 2}\n",
               "groups=2 must divide"),
    "duplicate name": ("input: [3, 8, 8]\nlayers:\n  - {name: a, type: ReLU}\n  - {name: a, type: ReLU}\n",
                       "already used"),
    "activation": ("input: [4]\nlayers:\n  - {type: Dense, units: 2, activation: relu7}\n",
                   "unknown activation 'relu7'"),
    "no input": ("layers:\n  - {type: ReLU}\n", "'input' must be"),
    "not yaml": ("input: [3, 8\nlayers: [\n", "not valid YAML"),
    "pool too large": ("input: [3, 2, 2]\nlayers:\n  - {type: MaxPooling2D, pool_size: 3}\n",
                       "effective kernel 3 (kernel 3) is larger than the input height 2"),
}


@pytest.mark.parametrize("case", BAD_SPECS, ids=list(BAD_SPECS))
def test_bad_spec_gives_one_line_and_exit_2(case, capsys, tmp_path):
    text, expected = BAD_SPECS[case]
    code, _, err = _run(capsys, _spec(tmp_path, text))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cnnlab: error: "), err
    assert expected in err


BAD_TARGETS = {
    "missing file": (["nope.yaml"], "does not exist"),
    "unknown model": (["resnet_20"], "unknown target 'resnet_20'"),
    "unknown torchvision": (["torchvision:resnet19"], "unknown torchvision model 'resnet19'"),
    "bad module": (["no_such_pkg.mod:build"], "cannot import module 'no_such_pkg.mod'"),
    "bad attribute": (["torchvision.models:nothing_here"], "has no attribute 'nothing_here'"),
    "no default input": (["torchvision.models:resnet18"], "no default input shape"),
    "bad --input": (["torchvision:resnet18", "--input", "3,-1,5"], "--input must be"),
    "bad --batch": (["torchvision:resnet18", "--batch", "0"], "--batch must be"),
    "forward fails": (["torchvision:vgg11", "--input", "3,16,16"], "layer 'features.20' (MaxPool2d) on input (512, 1, 1): Given input size"),
}


@pytest.mark.parametrize("case", BAD_TARGETS, ids=list(BAD_TARGETS))
def test_bad_target_gives_one_line_and_exit_2(case, capsys):
    argv, expected = BAD_TARGETS[case]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("cnnlab: error: "), err
    assert expected in err


def test_real_process_exit_status_and_no_traceback(exercises):
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "analyze", str(exercises / "dilated_stack.yaml"),
                           "--format", "json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    partial = json.loads(proc.stdout)  # the partial result is still valid JSON
    assert len(partial["layers"]) == 7 and partial["error"] in proc.stderr


def test_torchvision_default_inputs_follow_the_model():
    from cnnlab.analysis.targets import resolve

    inception = resolve("torchvision:inception_v3")
    assert inception.default_input == (3, 299, 299)  # its weights' crop size
    vit = resolve("torchvision:vit_h_14")
    assert vit.default_input == (3, 518, 518)  # the SWAG weights' crop ...
    vit.build()
    assert vit.default_input == (3, 224, 224)  # ... but built without weights it takes 224
    assert resolve("torchvision:fasterrcnn_resnet50_fpn").default_input is None  # not a classifier
