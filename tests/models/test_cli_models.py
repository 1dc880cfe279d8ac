"""``cnnlab models``: the table, --json (parameter counts against models built here), errors."""

import json

import torch
import torchvision

from cnnlab.cli import main
from cnnlab.models import create, list_models


def run(capsys, *argv):
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_lists_every_model_with_its_parameter_count(capsys):
    code, out, err = run(capsys, "--json")
    assert code == 0 and err == ""
    rows = {r["name"]: r for r in json.loads(out)}
    assert sorted(rows) == list_models()
    for name, r in rows.items():
        with torch.device("meta"):
            model = create(name, num_classes=r["num_classes"])
        assert r["params"] == sum(p.numel() for p in model.parameters()), name
    assert rows["mobilenet_v2"]["num_classes"] == 1000 and rows["resnet20"]["num_classes"] == 10
    tv = torchvision.models.mobilenet_v2()  # independent count for one row
    assert rows["mobilenet_v2"]["params"] == sum(p.numel() for p in tv.parameters())


def test_table_and_pattern(capsys):
    code, out, err = run(capsys, "mobilenet*")
    assert code == 0 and err == ""
    assert "mobilenet_v2_cifar" in out and "resnet20" not in out
    tv = sum(p.numel() for p in torchvision.models.mobilenet_v2().parameters())
    assert f"{tv:,}" in out  # torchvision's mobilenet_v2 parameter count, formatted
    assert "Sandler et al. 2018" in out  # descriptions shown when not on a narrow terminal


def test_no_match_is_a_one_line_error(capsys):
    code, out, err = run(capsys, "nothing*")
    assert code == 2 and out == ""
    assert err.strip() == (
        "cnnlab: error: no registered model matches 'nothing*'; run `cnnlab models`")
