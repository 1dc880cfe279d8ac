"""The segmentation study's report sections: tables, the IoU plot, best/worst test overlays."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.studies import _segmentation_plots as plots
from cnnlab.studies._segmentation_findings import groups

N_SHOWN = 3  # best and worst test images shown


def _test_predictions(run_dir: str) -> dict[str, np.ndarray]:
    with np.load(Path(run_dir) / "test_predictions.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _per_image_iou(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    inter = (pred & truth).reshape(len(pred), -1).sum(1)
    union = (pred | truth).reshape(len(pred), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def pick_overlays(payload: dict[str, Any], ds, out: Path) -> dict[str, Any]:
    """The best configuration's first run: its best and worst test images by IoU."""
    best_label, runs = max(groups(payload).items(),
                           key=lambda kv: statistics.fmean(r["test_iou"] for r in kv[1]))
    run = runs[0]
    p = _test_predictions(run["run_dir"])
    ious = _per_image_iou(p["predicted"].astype(bool), p["masks"].astype(bool))
    order = np.argsort(ious, kind="stable")
    names = [str(n) for n in p["names"]]
    pick = [int(i) for i in order[::-1][:N_SHOWN]], [int(i) for i in order[:N_SHOWN]]
    return {"config": best_label, "run": run["key"],
            "best": [{"name": names[i], "iou": float(ious[i])} for i in pick[0]],
            "worst": [{"name": names[i], "iou": float(ious[i])} for i in pick[1]],
            "per_image_iou_median": float(np.median(ious))}


def _overlay_rows(payload, ds, which: str) -> list[dict[str, Any]]:
    from cnnlab.data.segmentation import resize_pair

    info = payload["overlays"]
    run = next(r for r in payload["runs"] if r["key"] == info["run"])
    p = _test_predictions(run["run_dir"])
    index = {str(n): i for i, n in enumerate(p["names"])}
    where = {n: i for i, n in enumerate(ds.names)}
    size = tuple(p["masks"].shape[1:])
    rows = []
    for item in info[which]:
        k = index[item["name"]]
        img, _ = resize_pair(ds.images[where[item["name"]]], ds.masks[where[item["name"]]], size)
        rows.append({"image": img[0].numpy() / 255.0, "truth": p["masks"][k].astype(bool),
                     "pred": p["predicted"][k].astype(bool),
                     "label": f"{item['name']}\nIoU {item['iou']:.2f}"})
    return rows


def _table_rows(payload) -> list[dict[str, Any]]:
    rows = []
    for label, runs in groups(payload).items():
        def mean(k):
            return statistics.fmean(r[k] for r in runs)

        def std(k):
            return statistics.stdev(r[k] for r in runs) if len(runs) > 1 else None

        rows.append({"config": label, "seeds": len(runs), "test_iou": mean("test_iou"),
                     "iou_std": std("test_iou"), "test_dice": mean("test_dice"),
                     "iou_per_image": mean("test_iou_per_image"),
                     "pixel_error": mean("test_pixel_error"), "params": runs[0]["params"],
                     "mmacs": runs[0]["macs"] / 1e6, "train_s": mean("train_seconds")})
    return rows


def layout(rep, payload: dict[str, Any], found, ds) -> None:
    b = payload["budget"]
    rep.section("Results by configuration")
    rep.text(f"{payload['dataset']} ({payload['foreground']} = foreground), {b['size']}x"
             f"{b['size']} px, {b['epochs']} epochs, batch {b['batch_size']}, AdamW lr "
             f"{b['lr']} (cosine); unet_mobilenet_v2 alpha {b['width']}, decoder width "
             f"{b['decoder_width']}; test IoU/Dice over the test set's pooled pixels, "
             "'iou_per_image' the mean of per-image IoUs. Training seconds are this "
             "invocation's, on its device and torch threads; the budget's cost says under what "
             "load they were measured.")
    rep.table(_table_rows(payload), caption="mean over seeds; iou_std: one-run std")
    groups_ = [(label, [r["test_iou"] for r in runs]) for label, runs in groups(payload).items()]
    rep.figure(plots.iou_by_config(groups_, "test IoU (dots: seeds, bar: mean)"),
               "test_iou_by_config", "Test IoU of every run, by configuration.")
    for sec, title in (("losses", "Losses"), ("encoders", "Encoders"),
                       ("unet", "Classic U-Net"), ("summary", "Summary")):
        items = [f.claim for f in found if f.section == sec]
        if items:
            rep.section(title)
            rep.bullets(items)
    info = payload["overlays"]
    rep.section("Predicted masks: best and worst test images")
    rep.text(f"Run {info['run']} ({info['config']}); per-image test IoU median "
             f"{info['per_image_iou_median']:.3f}. Columns: image, true mask, predicted mask "
             "(logit > 0, i.e. probability > 0.5), errors (red: false positive, blue: false "
             "negative). A dotted, chequered texture in predicted masks of unet_mobilenet_v2 is the "
             "known artefact of stride-2 transposed convolutions whose kernel (3) is not a "
             "multiple of the stride (Odena et al. 2016, 'Deconvolution and checkerboard "
             "artifacts'): the course's decoder has it by design.")
    for which in ("best", "worst"):
        rep.figure(plots.overlays(_overlay_rows(payload, ds, which),
                                  f"{which} {N_SHOWN} test images by IoU"),
                   f"overlays_{which}", f"The {which} {N_SHOWN} test images of {info['run']}.")
    pre = payload.get("pretraining")
    rep.section("Data, split and encoder pretraining")
    s = payload["split"]
    items = [f"{payload['data_source']}: {s['num_train']} train / {s['num_val']} val / "
             f"{s['num_test']} test images ({s['how']}, split seed {s['split_seed']}); the test "
             f"images are listed in results.json (split.test_names)."]
    if pre:
        acc = (f", CIFAR-10 test accuracy {pre['test_accuracy']:.3f} after "
               f"{pre['train_seconds']:.0f} s" if "test_accuracy" in pre else "")
        items.append(f"'pretrained' encoder: {pre['source']} ({pre['path']}){acc}; "
                     f"{pre.get('loaded', '')}.")
    rep.bullets(items)
    rep.section("Every run")
    cols = [("key", "run", None), ("test_iou", "test IoU", None), ("test_dice", "Dice", None),
            ("test_pixel_error", "pixel error", None), ("train_seconds", "train s", None),
            ("final_train_loss", "final train loss", None)]
    rep.table(payload["runs"], cols)
