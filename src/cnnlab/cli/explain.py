"""``cnnlab explain``: Grad-CAM / Guided Backprop pictures of a trained run, and sanity checks.

    cnnlab explain --checkpoint RUN_DIR --images test:0-7 --out DIR [--method ...] [--layer ...]
    cnnlab explain sanity --checkpoint RUN_DIR [--images test:0-15] --out DIR

Images are test-set indexes of the run's data set (``0,5,17``, ``test:0-7``, ``train:3``) or image
files (resized to the model's input size, with a printed note). The first form writes, per
image, the chosen method's picture and the course figure (original | Guided Backprop | Grad-CAM
for two classes), plus ``explain.json``; ``sanity`` writes the cascading-randomisation plots, the
deletion/insertion curves and ``sanity.json``.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab._json import write_json
from cnnlab.errors import DataError, DataNotFoundError, UserError

METHODS = ("gradcam", "gradcam++", "guided", "guided-gradcam")
_IMAGE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
    ".pgm",
}
_INDEX = re.compile(r"^(?:(test|train):)?(\d+)(?:-(\d+))?$")
DEFAULT_SANITY_IMAGES = ["test:0-15"]

EXAMPLES = """\
examples:
  cnnlab explain --checkpoint runs/fmnist --images test:0-7 --out runs/fmnist/explain
  cnnlab explain --checkpoint runs/cifar --images 3,17 cat.jpg --method guided-gradcam \\
      --target cat --out runs/cifar/explain
  cnnlab explain sanity --checkpoint runs/fmnist --images test:0-15 --out runs/fmnist/sanity
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "explain",
        help="Grad-CAM / Guided Backprop explanations and their sanity checks",
        description="Explain a trained run's decisions with Grad-CAM, Grad-CAM++, Guided Backprop "
        "or Guided Grad-CAM, or (with 'sanity') check whether those maps can be trusted: "
        "cascading model randomisation (Adebayo et al. 2018) and deletion/insertion curves "
        "(Petsiuk et al. 2018).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["sanity"],
        help="'sanity': run the sanity checks instead of drawing explanations",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=Path,
        metavar="RUN_DIR",
        help="a 'cnnlab train --out' folder",
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="SPEC",
        help="image files and/or indexes into the run's data set: '0,5,17' and "
        "'test:0-7' (test split, all of it whatever --subset the run used), 'train:3' "
        f"(default for sanity: {DEFAULT_SANITY_IMAGES[0]})",
    )
    p.add_argument("--method", choices=METHODS, default="gradcam", help="default: gradcam")
    p.add_argument(
        "--layer",
        metavar="NAME",
        help="dotted name of the CAM layer (default: the last conv block, found "
        "automatically and printed)",
    )
    p.add_argument(
        "--target",
        metavar="CLASS",
        help="class to explain, as index or name (default: each image's prediction)",
    )
    p.add_argument(
        "--second-target",
        metavar="CLASS",
        help="second class of the course figure (default: the next most probable)",
    )
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--weights",
        choices=("final", "best", "checkpoint"),
        default="final",
        help="which weights of the run (default: final)",
    )
    p.add_argument(
        "--data-dir",
        metavar="PATH",
        help="where the run's data set is (default: the "
        "run's own --data-dir, or else the usual search order)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 or auto (default: cpu)")
    p.add_argument(
        "--cmap", default="jet", help="matplotlib colormap of the heatmaps (default: jet)"
    )
    p.add_argument(
        "--alpha", type=float, default=0.5, help="heatmap opacity in [0, 1] (default: 0.5)"
    )
    g = p.add_argument_group("sanity options")
    g.add_argument(
        "--seed", type=int, default=0, help="randomisation / random-order seed (default: 0)"
    )
    g.add_argument(
        "--steps",
        type=int,
        default=32,
        help="deletion/insertion steps from 0 to all pixels (default: 32)",
    )
    g.add_argument(
        "--deletion-baseline",
        choices=("zeros", "blur", "mean"),
        default="zeros",
        help="what deleted pixels become (default: zeros = the data set's mean colour)",
    )
    g.add_argument(
        "--insertion-baseline",
        choices=("zeros", "blur", "mean"),
        default="blur",
        help="what insertion starts from (default: blur)",
    )
    p.set_defaults(func=run)


# -- inputs -----------------------------------------------------------------------------------


@dataclass
class _Images:
    """A batch ready for the model, with what is needed to show and describe it."""

    x: Any  # (N, C, H, W) float, normalised with the run's mean/std
    display: list[Any]  # (H, W, 3) or (H, W) in [0, 1]
    sources: list[str]  # "test:17" or the file path
    labels: list[int | None]  # true labels of data-set images


def _parse_specs(specs: list[str]) -> list[tuple[str, Any]]:
    """``("file", Path)`` or ``(split, index)`` items, in order."""
    items: list[tuple[str, Any]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            items.append(("file", path))
            continue
        if path.suffix.lower() in _IMAGE_SUFFIXES or "/" in spec:
            raise DataNotFoundError(f"image file {spec} does not exist")
        for part in filter(None, (s.strip() for s in spec.split(","))):
            m = _INDEX.match(part)
            if not m:
                raise UserError(
                    f"--images: {part!r} is neither an image file nor a data-set index "
                    "(17, 0-7, test:0-7 or train:3)"
                )
            split, start = m.group(1) or "test", int(m.group(2))
            stop = int(m.group(3)) if m.group(3) else start
            if stop < start:
                raise UserError(f"--images: empty range {part!r} (write low-high)")
            items.extend((split, i) for i in range(start, stop + 1))
    if not items:
        raise UserError("--images: no image given")
    return items


def _load_file(path: Path, in_chans: int):
    """An image file as uint8 ``(1, C, h, w)``."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L" if in_chans == 1 else "RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None]


def _load_images(specs: list[str], loaded, data_dir: str | None, device) -> _Images:
    import torch

    from cnnlab.data import load_dataset, normalize, resize_images

    data, config = loaded.data, loaded.config
    size = tuple(data["image_size"])
    items = _parse_specs(specs)
    dataset = None
    if any(kind != "file" for kind, _ in items):
        dataset = load_dataset(
            config.dataset, data_dir=data_dir or config.data_dir, cache_dir=config.cache_dir
        )
    uint8, sources, labels = [], [], []
    for kind, what in items:
        if kind == "file":
            img = _load_file(what, data["in_chans"])
            if tuple(img.shape[-2:]) != size:
                print(
                    f"note: resized {what} from {img.shape[-1]}x{img.shape[-2]} to "
                    f"{size[1]}x{size[0]} (the model's input size)"
                )
                img = resize_images(img, size)
            uint8.append(img)
            sources.append(str(what))
            labels.append(None)
        else:
            images = getattr(dataset, f"{kind}_images")
            if what >= len(images):
                raise UserError(
                    f"--images: index {what} is out of range: the {dataset.name} "
                    f"{kind} set has {len(images)} images (0..{len(images) - 1})"
                )
            img = torch.from_numpy(images[what : what + 1].copy()).permute(0, 3, 1, 2)
            uint8.append(resize_images(img, size))
            sources.append(f"{kind}:{what}")
            labels.append(int(getattr(dataset, f"{kind}_labels")[what]))
    batch = torch.cat(uint8)
    display = [
        im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        for im in (batch.numpy().astype("float64") / 255.0)
    ]
    x = normalize(batch, data["mean"], data["std"]).to(device)
    return _Images(x, display, sources, labels)


def _class_index(value: str | None, classes: list[str], option: str) -> int | None:
    """A class given as index or (case-insensitive) name."""
    if value is None:
        return None
    if value.lstrip("-").isdigit():
        index = int(value)
        if not 0 <= index < len(classes):
            raise UserError(
                f"{option} {index} is out of range: the model has {len(classes)} "
                f"classes (0..{len(classes) - 1})"
            )
        return index
    lowered = [c.lower() for c in classes]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    raise UserError(
        f"{option} {value!r} is not a class; choose an index or one of: " + ", ".join(classes)
    )


def _slug(source: str) -> str:
    return re.sub(
        r"[^A-Za-z0-9_-]+",
        "",
        Path(source).stem if "/" in source or "." in source else source.replace(":", ""),
    )


# -- the commands -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    import torch

    from cnnlab.engine import load_run, resolve_device
    from cnnlab.explain import default_target_layer, resolve_layer

    if not 0.0 <= args.alpha <= 1.0:
        raise UserError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.action is None and not args.images:
        raise UserError("--images is required (for example --images test:0-7 or a file)")
    device = resolve_device(args.device)
    loaded = load_run(args.checkpoint, device, weights=args.weights)
    model, classes = loaded.model, list(loaded.classes)
    images = _load_images(args.images or DEFAULT_SANITY_IMAGES, loaded, args.data_dir, device)
    if args.layer:
        layer = resolve_layer(model, args.layer)[0]
        print(f"layer: {layer}")
    else:
        layer = default_target_layer(model, images.x)
        print(f"layer: {layer} (the last conv block, found automatically; --layer to change)")
    target = _class_index(args.target, classes, "--target")
    second = _class_index(args.second_target, classes, "--second-target")
    args.out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        probs = torch.softmax(model(images.x).float(), dim=1).cpu()
    common = {
        "checkpoint": str(args.checkpoint),
        "weights": args.weights,
        "model": loaded.config.model,
        "dataset": loaded.data.get("name", loaded.config.dataset),
        "classes": classes,
        "layer": layer,
        "layer_given": bool(args.layer),
    }
    if args.action == "sanity":
        return _sanity(args, model, images, probs, target, layer, classes, common, device)
    return _explain(args, model, images, probs, target, second, layer, classes, common, device)


def _explain(
    args, model, images: _Images, probs, target, second, layer, classes, common, device
) -> int:
    import torch

    from cnnlab.explain import GradCAM, GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, normalize
    from cnnlab.explain.overlay import course_figure, guided_to_image, overlay, save_figure
    from cnnlab.provenance import environment

    n = len(images.sources)
    first = probs.argmax(1) if target is None else torch.full((n,), target)
    if second is None:  # the most probable class other than the first
        ranked = probs.argsort(dim=1, descending=True)
        second_t = torch.where(ranked[:, 0] == first, ranked[:, 1], ranked[:, 0])
    else:
        second_t = torch.full((n,), second)

    with GradCAM(model, layer) as gradcam, GuidedBackprop(model) as guided:  # course figure
        raw_cams = [gradcam.compute(images.x, t, normalize=False).cpu() for t in (first, second_t)]
        guides = [guided.compute(images.x, t).cpu() for t in (first, second_t)]
    cams = [normalize(raw) for raw in raw_cams]
    if args.method == "gradcam":
        raw = raw_cams[0]
    elif args.method == "gradcam++":
        with GradCAMPlusPlus(model, layer) as cam:
            raw = cam.compute(images.x, first, normalize=False).cpu()
    elif args.method == "guided":
        raw = guides[0]
    else:
        with GuidedGradCAM(model, layer) as ggc:
            raw = ggc.compute(images.x, first).cpu()
    is_cam = args.method in ("gradcam", "gradcam++")
    maps = normalize(raw) if is_cam else raw

    records = []
    method_slug = args.method.replace("+", "p")
    for i, source in enumerate(images.sources):
        stem = f"{i:02d}_{_slug(source)}"
        c1, c2 = int(first[i]), int(second_t[i])
        if is_cam:
            picture = overlay(images.display[i], maps[i], cmap=args.cmap, alpha=args.alpha)
        else:
            picture = guided_to_image(maps[i])
        method_png = args.out / f"{stem}_{method_slug}.png"
        _save_picture(
            method_png, picture, f"{args.method}: {classes[c1]} (p={float(probs[i, c1]):.2f})"
        )
        figure_png = save_figure(
            course_figure(
                images.display[i],
                [guides[0][i], guides[1][i]],
                [cams[0][i], cams[1][i]],
                [classes[c1], classes[c2]],
                [float(probs[i, c1]), float(probs[i, c2])],
                predicted=f"{classes[int(probs[i].argmax())]} (p={float(probs[i].max()):.2f})"
                + ("" if images.labels[i] is None else f"\nlabel: {classes[images.labels[i]]}"),
                cmap=args.cmap,
                alpha=args.alpha,
            ),
            args.out / f"{stem}_figure.png",
        )
        all_zero = bool(raw[i].abs().max() == 0)
        label = images.labels[i]
        records.append(
            {
                "source": source,
                "label": label,
                "label_name": None if label is None else classes[label],
                "predicted": int(probs[i].argmax()),
                "predicted_name": classes[int(probs[i].argmax())],
                "probabilities": [round(float(p), 6) for p in probs[i]],
                "target": c1,
                "target_name": classes[c1],
                "target_probability": float(probs[i, c1]),
                "second_target": c2,
                "second_target_name": classes[c2],
                "map_all_zero": all_zero,
                "files": {"method": method_png.name, "figure": figure_png.name},
            }
        )
        truth = "" if label is None else f" (label {classes[label]})"
        print(
            f"{source}{truth}: predicted {records[-1]['predicted_name']} "
            f"p={float(probs[i].max()):.2f}; explained {classes[c1]} -> {method_png}"
        )
        if all_zero:
            print(
                f"  warning: the {args.method} map of {source} for {classes[c1]} is all zero "
                f"(for a CAM: no channel of layer {layer} has positive evidence for that class)"
            )
    payload = {
        **common,
        "method": args.method,
        "target_rule": "predicted" if args.target is None else f"class {args.target}",
        "cmap": args.cmap,
        "alpha": args.alpha,
        "images": records,
        "environment": environment(device),
    }
    write_json(args.out / "explain.json", payload)
    print(f"wrote {2 * len(records)} PNGs and explain.json to {args.out}")
    return 0


def _save_picture(path: Path, picture, title: str) -> None:
    from matplotlib.figure import Figure

    from cnnlab.explain.overlay import save_figure

    fig = Figure(figsize=(3.0, 3.2), layout="constrained")
    ax = fig.subplots()
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    save_figure(fig, path)


def _sanity(args, model, images: _Images, probs, target, layer, classes, common, device) -> int:
    import torch

    from cnnlab.explain import GradCAM, GradCAMPlusPlus, GuidedBackprop
    from cnnlab.explain.faithfulness import deletion_insertion, plot_curves
    from cnnlab.explain.overlay import save_figure
    from cnnlab.explain.sanity import cascading_randomization, plot_cascade, plot_cascade_maps
    from cnnlab.provenance import environment

    n = len(images.sources)
    targets = probs.argmax(1) if target is None else torch.full((n,), target)
    print(f"cascading randomisation of {type(model).__name__} on {n} images ...")
    cascade = cascading_randomization(model, images.x, targets, layer=layer, seed=args.seed)
    save_figure(plot_cascade(cascade), args.out / "cascade.png")
    save_figure(plot_cascade_maps(cascade, images.display[0]), args.out / "cascade_maps.png")
    columns = {
        "Grad-CAM": ("gradcam", "abs"),
        "GuidedBP |.|": ("guided", "abs"),
        "GuidedBP signed": ("guided", "signed"),
    }
    print(f"Spearman rank correlation with the trained model's maps (mean over {n} images):")
    print(f"{'layers randomised down to':>26}" + "".join(f"{c:>17}" for c in columns))
    for s, stage in enumerate(cascade.stages):
        print(
            f"{stage:>26}" + "".join(f"{cascade.mean(*key)[s]:17.3f}" for key in columns.values())
        )

    print(f"deletion / insertion curves ({args.steps} steps) ...")
    with (
        GradCAM(model, layer) as cam,
        GradCAMPlusPlus(model, layer) as campp,
        GuidedBackprop(model) as guided,
    ):
        raw = cam.compute(images.x, targets, normalize=False)
        g = guided.compute(images.x, targets)
        saliency = {
            "gradcam": cam.compute(images.x, targets),
            "gradcam++": campp.compute(images.x, targets),
            "guided": g.abs().sum(dim=1),
            "guided-gradcam": (g * raw[:, None]).abs().sum(dim=1),
        }
    faith = deletion_insertion(
        model,
        images.x,
        saliency,
        targets,
        steps=args.steps,
        seed=args.seed,
        deletion_baseline=args.deletion_baseline,
        insertion_baseline=args.insertion_baseline,
    )
    save_figure(plot_curves(faith), args.out / "deletion_insertion.png")
    for kind, better in (("deletion", "lower"), ("insertion", "higher")):
        aucs = ", ".join(f"{name} {faith.mean_auc(kind, name):.3f}" for name in faith.auc[kind])
        print(f"  {kind} AUC ({better} is better): {aucs}")

    payload = {
        **common,
        "images": images.sources,
        "labels": images.labels,
        "cascade": cascade.to_json(),
        "faithfulness": faith.to_json(),
        "files": ["cascade.png", "cascade_maps.png", "deletion_insertion.png"],
        "environment": environment(device),
    }
    write_json(args.out / "sanity.json", payload)
    print(
        f"wrote cascade.png, cascade_maps.png, deletion_insertion.png and sanity.json to {args.out}"
    )
    return 0
