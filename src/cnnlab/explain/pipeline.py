"""Explanations of a trained run, end to end: what ``cnnlab explain`` does.

:func:`run` loads the run (:func:`cnnlab.engine.load_run`, the one loader of checkpoints and
configs), reads the images (data-set indexes, or files through :func:`cnnlab.data.read_image`,
the one image reader: a high-bit-depth file is scaled, not clipped, and the conversion is
recorded in ``explain.json``), draws the chosen method's pictures and the course figure, or runs
the sanity checks, and writes into an output folder opened and locked by
:func:`cnnlab._io.locked_output_dir`. The command line only parses arguments into
:class:`ExplainOptions`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab._json import write_json
from cnnlab.errors import DataNotFoundError, UserError

METHODS = ("gradcam", "gradcam++", "guided", "guided-gradcam")
BASELINES = ("zeros", "blur", "mean")
WEIGHTS = ("final", "best", "checkpoint")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                   ".pgm"}
_INDEX = re.compile(r"^(?:(test|train):)?(\d+)(?:-(\d+))?$")
DEFAULT_SANITY_IMAGES = ["test:0-15"]


@dataclass
class ExplainOptions:
    """Everything ``cnnlab explain`` [sanity] is told (the options of the same names)."""

    checkpoint: Path  # a 'cnnlab train --out' folder
    out: Path  # the output folder
    images: list[str] | None = None  # image files and/or data-set indexes
    action: str | None = None  # None: explanations; "sanity": the sanity checks
    method: str = "gradcam"
    layer: str | None = None
    target: str | None = None
    second_target: str | None = None
    weights: str = "final"
    data_dir: str | None = None
    device: str = "cpu"
    cmap: str = "jet"
    alpha: float = 0.5
    seed: int = 0
    steps: int = 32
    deletion_baseline: str = "zeros"
    insertion_baseline: str = "blur"


# -- inputs -----------------------------------------------------------------------------------


@dataclass
class _Images:
    """A batch ready for the model, with what is needed to show and describe it."""

    x: Any  # (N, C, H, W) float, normalised with the run's mean/std
    display: list[Any]  # (H, W, 3) or (H, W) in [0, 1]
    sources: list[str]  # "test:17" or the file path
    labels: list[int | None]  # true labels of data-set images
    conversions: list[str | None]  # how an image file was converted to the model's input


def _parse_specs(specs: list[str]) -> list[tuple[str, Any]]:
    """``("file", Path)`` or ``(split, index)`` items, in order."""
    items: list[tuple[str, Any]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            items.append(("file", path))
            continue
        if path.is_dir():
            raise UserError(f"--images: {spec} is a folder; give image files or indexes")
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
    """An image file as uint8 ``(1, C, h, w)`` and what was done to convert it (or None)."""
    import torch

    from cnnlab._io import read_bytes
    from cnnlab.data import read_image

    arr, conversion = read_image(read_bytes(path, "image file"), f"image {path}", in_chans)
    return torch.from_numpy(arr).permute(2, 0, 1)[None], conversion


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
    uint8, sources, labels, conversions = [], [], [], []
    for kind, what in items:
        if kind == "file":
            img, conversion = _load_file(what, data["in_chans"])
            if conversion is not None:
                print(f"note: {what}: {conversion}")
            conversions.append(conversion)
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
            conversions.append(None)
            sources.append(f"{kind}:{what}")
            labels.append(int(getattr(dataset, f"{kind}_labels")[what]))
    batch = torch.cat(uint8)
    display = [
        im[0] if im.shape[0] == 1 else im.transpose(1, 2, 0)
        for im in (batch.numpy().astype("float64") / 255.0)
    ]
    x = normalize(batch, data["mean"], data["std"]).to(device)
    return _Images(x, display, sources, labels, conversions)


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


def run(opts: ExplainOptions) -> int:
    """Explain (or, with ``opts.action == "sanity"``, sanity-check) a run's decisions; writes
    the pictures and ``explain.json`` / ``sanity.json`` into ``opts.out``. Returns 0."""

    from cnnlab._io import check_output_dir, locked_output_dir
    from cnnlab._numbers import check_number
    from cnnlab.engine import load_run, resolve_device
    from cnnlab.explain import default_target_layer, resolve_layer

    check_number(opts.alpha, "--alpha", low=0, high=1)
    if opts.action is None and not opts.images:
        raise UserError("--images is required (for example --images test:0-7 or a file)")
    check_output_dir(opts.out)  # before any work: a file or a path under a file
    device = resolve_device(opts.device)
    loaded = load_run(opts.checkpoint, device, weights=opts.weights)
    model, classes = loaded.model, list(loaded.classes)
    images = _load_images(opts.images or DEFAULT_SANITY_IMAGES, loaded, opts.data_dir, device)
    if opts.action == "sanity":
        h, w = images.x.shape[-2:]
        check_number(opts.steps, "--steps", low=1, high=h * w, integer=True,
                     why=f"(the images have {h}x{w} = {h * w} pixels)")
    if opts.layer:
        layer = resolve_layer(model, opts.layer)[0]
        print(f"layer: {layer}")
    else:
        layer = default_target_layer(model, images.x)
        print(f"layer: {layer} (the last conv block, found automatically; --layer to change)")
    target = _class_index(opts.target, classes, "--target")
    second = _class_index(opts.second_target, classes, "--second-target")
    with locked_output_dir(opts.out):
        return _run(opts, model, images, classes, layer, target, second, loaded, device)


def _run(opts, model, images, classes, layer, target, second, loaded, device) -> int:
    import torch

    with torch.no_grad():
        probs = torch.softmax(model(images.x).float(), dim=1).cpu()
    common = {
        "checkpoint": str(opts.checkpoint),
        "weights": opts.weights,
        "model": loaded.config.model,
        "dataset": loaded.data.get("name", loaded.config.dataset),
        "classes": classes,
        "layer": layer,
        "layer_given": bool(opts.layer),
    }
    if opts.action == "sanity":
        return _sanity(opts, model, images, probs, target, layer, classes, common, device)
    return _explain(opts, model, images, probs, target, second, layer, classes, common, device)


def _explain(
    opts, model, images: _Images, probs, target, second, layer, classes, common, device
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
    if opts.method == "gradcam":
        raw = raw_cams[0]
    elif opts.method == "gradcam++":
        with GradCAMPlusPlus(model, layer) as cam:
            raw = cam.compute(images.x, first, normalize=False).cpu()
    elif opts.method == "guided":
        raw = guides[0]
    else:
        with GuidedGradCAM(model, layer) as ggc:
            raw = ggc.compute(images.x, first).cpu()
    is_cam = opts.method in ("gradcam", "gradcam++")
    maps = normalize(raw) if is_cam else raw

    records = []
    method_slug = opts.method.replace("+", "p")
    for i, source in enumerate(images.sources):
        stem = f"{i:02d}_{_slug(source)}"
        c1, c2 = int(first[i]), int(second_t[i])
        if is_cam:
            picture = overlay(images.display[i], maps[i], cmap=opts.cmap, alpha=opts.alpha)
        else:
            picture = guided_to_image(maps[i])
        method_png = opts.out / f"{stem}_{method_slug}.png"
        _save_picture(
            method_png, picture, f"{opts.method}: {classes[c1]} (p={float(probs[i, c1]):.2f})"
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
                cmap=opts.cmap,
                alpha=opts.alpha,
            ),
            opts.out / f"{stem}_figure.png",
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
                "conversion": images.conversions[i],
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
                f"  warning: the {opts.method} map of {source} for {classes[c1]} is all zero "
                f"(for a CAM: no channel of layer {layer} has positive evidence for that class)"
            )
    payload = {
        **common,
        "method": opts.method,
        "target_rule": "predicted" if opts.target is None else f"class {opts.target}",
        "cmap": opts.cmap,
        "alpha": opts.alpha,
        "images": records,
        "environment": environment(device),
    }
    write_json(opts.out / "explain.json", payload)
    print(f"wrote {2 * len(records)} PNGs and explain.json to {opts.out}")
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


def _sanity(opts, model, images: _Images, probs, target, layer, classes, common, device) -> int:
    import torch

    from cnnlab.explain import GradCAM, GradCAMPlusPlus, GuidedBackprop
    from cnnlab.explain.faithfulness import deletion_insertion, plot_curves
    from cnnlab.explain.overlay import save_figure
    from cnnlab.explain.sanity import cascading_randomization, plot_cascade, plot_cascade_maps
    from cnnlab.provenance import environment

    n = len(images.sources)
    targets = probs.argmax(1) if target is None else torch.full((n,), target)
    print(f"cascading randomisation of {type(model).__name__} on {n} images ...")
    cascade = cascading_randomization(model, images.x, targets, layer=layer, seed=opts.seed)
    save_figure(plot_cascade(cascade), opts.out / "cascade.png")
    save_figure(plot_cascade_maps(cascade, images.display[0]), opts.out / "cascade_maps.png")
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

    print(f"deletion / insertion curves ({opts.steps} steps) ...")
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
        steps=opts.steps,
        seed=opts.seed,
        deletion_baseline=opts.deletion_baseline,
        insertion_baseline=opts.insertion_baseline,
    )
    save_figure(plot_curves(faith), opts.out / "deletion_insertion.png")
    for kind, better in (("deletion", "lower"), ("insertion", "higher")):
        aucs = ", ".join(f"{name} {faith.mean_auc(kind, name):.3f}" for name in faith.auc[kind])
        print(f"  {kind} AUC ({better} is better): {aucs}")

    payload = {
        **common,
        "images": images.sources,
        "labels": images.labels,
        "conversions": images.conversions,
        "cascade": cascade.to_json(),
        "faithfulness": faith.to_json(),
        "files": ["cascade.png", "cascade_maps.png", "deletion_insertion.png"],
        "environment": environment(device),
    }
    write_json(opts.out / "sanity.json", payload)
    print(
        f"wrote cascade.png, cascade_maps.png, deletion_insertion.png and sanity.json to {opts.out}"
    )
    return 0
