"""Theory against counts for the MobileNet study.

Counts come from the analyzer (:func:`cnnlab.analysis.analyze`); this module only sorts them by
convolution kind and sets them beside the closed-form predictions of the papers:

- width multiplier alpha: the MACs of a layer whose input and output channels both scale go as
  alpha^2 (Howard et al. 2017, Sec. 3.3); depthwise layers, the stem (fixed input channels) and
  the classifier (fixed outputs) scale only as alpha, and channel counts are rounded to
  multiples of 8, so a whole network's ratio sits a little above alpha^2;
- resolution multiplier rho: every convolution's MACs scale with the number of output positions,
  rho^2 (Sec. 3.4), computed here with the real rounded input side (e.g. 0.875 x 28 -> 24 px);
- depthwise separable vs full 3x3 convolution: cost ratio 1/N + 1/Dk^2 (Eq. 5), N the output
  channels, Dk the kernel size; checked layer by layer against Conv MobileNet;
- the share of Mult-Adds (and of parameters) in 1x1 convolutions: 94.86% (74.59%) for
  MobileNetV1 at 224x224 (Table 2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from cnnlab.studies.findings import relative_spread

KINDS = ("pointwise", "depthwise", "full", "grouped", "linear")
PAPER_SHARE_1X1 = {"macs": 0.9486, "params": 0.7459}  # Howard et al. 2017, Table 2


def conv_kind(module: nn.Module) -> str | None:
    """``pointwise`` (1x1, groups 1), ``depthwise``, ``full`` (k > 1, groups 1), ``grouped``,
    ``linear``, or None for modules without MACs."""
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d):
        if module.groups == 1:
            return "pointwise" if tuple(module.kernel_size) == (1, 1) else "full"
        if module.groups == module.in_channels:
            return "depthwise"
        return "grouped"
    return None


def count(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters and MACs of ``model`` at ``input_shape`` (C, H, W), split by convolution kind.

    Returns:
        ``params``, ``macs`` (conv + linear multiply-accumulates, batch 1), ``macs_by_kind`` and
        ``params_by_kind`` (:data:`KINDS`), ``share_1x1`` and ``share_1x1_params`` (pointwise
        share of conv + linear MACs / weights), and ``layers``: one dict per conv/linear call
        (name, kind, MACs, in/out channels, kernel).
    """
    from cnnlab.analysis import analyze
    from cnnlab.analysis.params import count_parameters

    analysis = analyze(model, tuple(input_shape))
    macs_by_kind = dict.fromkeys(KINDS, 0)
    params_by_kind = dict.fromkeys(KINDS, 0)
    layers = []
    seen_params: set[str] = set()
    for layer in analysis.layers:
        name = layer.name.split("#")[0]  # repeated calls of one module carry a #k suffix
        try:
            module = model.get_submodule(name)
        except AttributeError:
            continue  # a functional op, not a module
        kind = conv_kind(module)
        if kind is None:
            continue
        macs_by_kind[kind] += layer.macs
        if name not in seen_params:
            seen_params.add(name)
            params_by_kind[kind] += module.weight.numel()
        layers.append({
            "name": name, "kind": kind, "macs": layer.macs,
            "in_channels": getattr(module, "in_channels", getattr(module, "in_features", None)),
            "out_channels": getattr(module, "out_channels", getattr(module, "out_features", None)),
            "kernel": list(getattr(module, "kernel_size", (1, 1))),
        })
    totals = analysis.totals
    counted = count_parameters(model)  # PyTorch's convention: model.parameters(), not buffers
    conv_macs = sum(macs_by_kind.values())
    conv_params = sum(params_by_kind.values())
    return {
        "params": counted.total, "trainable_params": counted.trainable,
        "macs": totals["total_macs"], "flops": totals["total_flops"],
        "macs_by_kind": macs_by_kind, "params_by_kind": params_by_kind,
        "share_1x1": macs_by_kind["pointwise"] / conv_macs if conv_macs else None,
        "share_1x1_params": params_by_kind["pointwise"] / conv_params if conv_params else None,
        "other_ops": {k: totals[k] for k in ("bias_ops", "norm_ops", "act_ops", "pool_ops",
                                             "elementwise_ops") if k in totals},
        "layers": layers,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _sweep(rows: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, Any]],
           role: str, axis: str) -> list[dict[str, Any]]:
    """Ratios to the alpha = rho = 1 architecture of ``role`` along ``axis`` (width|resolution)."""
    other = "resolution" if axis == "width" else "width"
    line = sorted((r for r in rows if r["role"] == role and r[other] == 1.0),
                  key=lambda r: -r[axis])
    base = next((r for r in line if r[axis] == 1.0), None)
    if base is None:
        return []
    base_hw = counts[base["arch_id"]]["input_shape"][1:]
    out = []
    for r in line:
        c = counts[r["arch_id"]]
        m = r[axis]
        if axis == "width":
            predicted = m * m
            pw_ratio = _ratio(c["macs_by_kind"]["pointwise"],
                              counts[base["arch_id"]]["macs_by_kind"]["pointwise"])
            extra = {"pointwise_macs_ratio": pw_ratio}
        else:
            h, w = c["input_shape"][1:]
            predicted = m * m
            extra = {"input_side": h, "effective_rho2": (h * w) / (base_hw[0] * base_hw[1])}
        entry = {
            "role": role, axis: m, "arch_id": r["arch_id"], "macs": r["macs"],
            "params": r["params"], "predicted_ratio": predicted,
            "macs_ratio": _ratio(r["macs"], base["macs"]),
            "params_ratio": _ratio(r["params"], base["params"]),
            "test_accuracy": r["test_accuracy"],
            **extra,
        }
        for dev in ("cpu", "cuda"):
            entry[f"{dev}_latency_ratio"] = _ratio(r[f"{dev}_latency_ms"], base[f"{dev}_latency_ms"])
            # each latency's spread over repeats: what the latency-vs-MACs comparison is judged by
            entry[f"{dev}_latency_spreads"] = _spreads(r, base, dev)
            # time per image at large batch, relative: the inverse throughput ratio
            entry[f"{dev}_throughput_time_ratio"] = _ratio(base[f"{dev}_throughput"],
                                                           r[f"{dev}_throughput"])
        out.append(entry)
    return out


def _spreads(a: Mapping[str, Any], b: Mapping[str, Any], dev: str) -> list[float | None]:
    """The relative half-IQR over repeats of the batch-1 latencies of ``a`` and ``b``."""
    return [relative_spread(r.get(f"{dev}_latency_ms"), r.get(f"{dev}_latency_iqr_ms"))
            for r in (a, b)]


def separable_table(v1: Mapping[str, Any], conv_v1: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Layer by layer: depthwise + pointwise MACs of MobileNetV1 over the full 3x3 convolution
    at the same place in Conv MobileNet, against 1/N + 1/Dk^2."""
    full = {layer["name"]: layer for layer in conv_v1["layers"] if layer["kind"] == "full"}
    table = []
    for layer in v1["layers"]:
        if layer["kind"] != "depthwise":
            continue
        block = layer["name"].rsplit(".dw", 1)[0]  # features.i.dw.0 -> features.i
        pw = next((p for p in v1["layers"]
                   if p["kind"] == "pointwise" and p["name"].startswith(block + ".pw")), None)
        ref = next((f for name, f in full.items() if name.startswith(block + ".")), None)
        if pw is None or ref is None:
            continue
        n, dk = pw["out_channels"], layer["kernel"][0]
        table.append({
            "block": block, "in_channels": layer["in_channels"], "out_channels": n,
            "separable_macs": layer["macs"] + pw["macs"], "full_macs": ref["macs"],
            "ratio": (layer["macs"] + pw["macs"]) / ref["macs"],
            "predicted_ratio": 1 / n + 1 / dk ** 2,
        })
    return table


def compare(rows: Sequence[Mapping[str, Any]], counts: Mapping[str, Mapping[str, Any]],
            num_classes: int) -> dict[str, Any]:
    """Every theory-vs-measurement table of the report (see the module docstring)."""
    by_role = {r["role"]: r for r in rows if r["width"] == 1.0 and r["resolution"] == 1.0}
    theory: dict[str, Any] = {
        "num_classes": num_classes,
        "alpha": {role: _sweep(rows, counts, role, "width") for role in ("v1", "v2")},
        "rho": {role: _sweep(rows, counts, role, "resolution") for role in ("v1", "v2")},
        "share_1x1": {
            role: {"macs": counts[r["arch_id"]]["share_1x1"],
                   "params": counts[r["arch_id"]]["share_1x1_params"],
                   "macs_by_kind": counts[r["arch_id"]]["macs_by_kind"]}
            for role, r in by_role.items() if role in ("v1", "v2")
        },
        "paper_share_1x1": PAPER_SHARE_1X1,
    }
    if "v1" in by_role and "conv_v1" in by_role:
        v1, cv = by_role["v1"], by_role["conv_v1"]
        table = separable_table(counts[v1["arch_id"]], counts[cv["arch_id"]])
        theory["separable"] = {
            "layers": table,
            "network_macs_ratio": _ratio(v1["macs"], cv["macs"]),
            "network_params_ratio": _ratio(v1["params"], cv["params"]),
            "cpu_latency_ratio": _ratio(v1["cpu_latency_ms"], cv["cpu_latency_ms"]),
            "cuda_latency_ratio": _ratio(v1["cuda_latency_ms"], cv["cuda_latency_ms"]),
            "cpu_latency_spreads": _spreads(v1, cv, "cpu"),
            "cuda_latency_spreads": _spreads(v1, cv, "cuda"),
            "cpu_throughput_time_ratio": _ratio(cv["cpu_throughput"], v1["cpu_throughput"]),
            "cuda_throughput_time_ratio": _ratio(cv["cuda_throughput"], v1["cuda_throughput"]),
            "paper_224_macs_ratio": 569 / 4866,  # Table 4
        }
    if "v2" in by_role and "resnet" in by_role:
        v2, rn = by_role["v2"], by_role["resnet"]
        theory["v2_vs_resnet"] = {
            "macs_ratio": _ratio(rn["macs"], v2["macs"]),
            "cpu_latency_ratio": _ratio(rn["cpu_latency_ms"], v2["cpu_latency_ms"]),
            "cuda_latency_ratio": _ratio(rn["cuda_latency_ms"], v2["cuda_latency_ms"]),
            "cpu_throughput_ratio": _ratio(v2["cpu_throughput"], rn["cpu_throughput"]),
            "cuda_throughput_ratio": _ratio(v2["cuda_throughput"], rn["cuda_throughput"]),
        }
    return theory
