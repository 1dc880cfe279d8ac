"""``cnnlab train``: train a registered model on CIFAR-10, Fashion-MNIST, SST-5, or segment the
Weizmann horses or the ISBI 2012 membranes.

Every option maps to one field of :class:`cnnlab.engine.TrainConfig` (same name, dashes for
underscores). With ``--resume`` the saved settings of the run in ``--out`` are the defaults, so
``cnnlab train --out DIR --resume`` alone continues a run; options given explicitly must agree
with the saved run (otherwise an error lists the differences).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnlab.cli import add_threads_option, apply_threads
from cnnlab.errors import UserError

EPILOG = """\
recipes:
  Fashion-MNIST on the CPU (>= 92% test accuracy in under 3 minutes of one core):
    cnnlab train --model compact_cnn --dataset fashion-mnist --epochs 6 --batch-size 128 \\
        --lr 0.2 --augment flip --val-fraction 0 --amp --channels-last --out runs/fmnist
  CIFAR-10 on one GPU (bf16 autocast and channels_last are automatic on CUDA):
    cnnlab train --model mobilenet_v2_cifar --dataset cifar10 --epochs 30 --batch-size 512 \\
        --lr 0.4 --label-smoothing 0.2 --val-fraction 0 --out runs/mnv2
  a quick look (~82% on Fashion-MNIST in seconds): --subset 5000 --epochs 2 --batch-size 64 --lr 0.05
  (the default lr 0.1 at batch 256 needs more than a few dozen steps to settle)
  SST-5 sentiment, Kim's CNN on every labelled training phrase, trained for the sentences' class
  prior (the logit-adjusted loss), the best dev epoch tested as in Kim 2014 (46.3% test accuracy
  for seed 0, 46.3% +- 0.4 over 3 seeds; about 3 min of training each on 2 idle cores):
    cnnlab train --model kim_cnn --dataset sst5 --task-kw train_on=phrases --task-kw max_norm=3 \\
        --task-kw prior=sentences --model-kw embed_scale=0.25 --optimizer adamw --weight-decay 0 \\
        --lr 0.0005 --batch-size 50 --schedule constant --warmup 0 --label-smoothing 0 \\
        --epochs 3 --out runs/kim
  Segmentation of the Weizmann horses (U-Net with a MobileNetV2 encoder, IoU loss), the encoder
  started from a CIFAR-10 run of mobilenet_v2_cifar (or torchvision's mobilenet_v2 weights):
    cnnlab train --model unet_mobilenet_v2 --dataset horse --task-kw loss=iou --task-kw size=128 \\
        --encoder-weights runs/mnv2 --optimizer adamw --lr 0.003 --weight-decay 1e-4 \\
        --schedule cosine --batch-size 16 --epochs 20 --val-fraction 0 --out runs/horse

outputs in --out: metrics.json, history.csv, curves_loss.png, curves_accuracy.png,
confusion_matrix.png, per_class.json/.csv, config.json (with versions, device, git commit),
model.pt (final weights), best.pt (best validation epoch), checkpoint.pt (for --resume).
Ctrl-C saves a checkpoint and exits with status 130; rerun with --resume to continue.

several processes (data parallel, torch.distributed): add --nproc-per-node N (CPU: gloo, each
process with --threads, default 1; CUDA: NCCL, one GPU per process), or run
  torchrun --nproc-per-node N [torchrun's multi-node flags] -m cnnlab train ...
--batch-size is the global batch: each process trains on 1/N of it. Resume with the same N.
"""


def _model_kw(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a name, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # a bare string such as act_layer=silu


def register(subparsers: argparse._SubParsersAction) -> None:
    from cnnlab.engine.config import OPTIMIZERS, SCHEDULES, TrainConfig
    from cnnlab.engine.tasks import dataset_names

    d = TrainConfig()
    p = subparsers.add_parser(
        "train", help="train a model on CIFAR-10, Fashion-MNIST, SST-5 or a segmentation set",
        description="Train a registered model (see `cnnlab models`) on real data, with progress "
        "bars, checkpoints every epoch, learning curves, a confusion matrix and per-class "
        "metrics. Data: see `--data-dir`; decoded images are cached in ~/.cache/cnnlab.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS)
    g = p.add_argument_group("what to train")
    g.add_argument("--model", help="registered model name, e.g. simple_cnn, mobilenet_v2_cifar")
    g.add_argument("--dataset", choices=dataset_names(),
                   help="images: cifar10, fashion-mnist; sentences: sst5 (5 sentiment classes)")
    g.add_argument("--width", type=float, help=f"width multiplier alpha (default {d.width})")
    g.add_argument("--resolution", type=float,
                   help=f"resolution multiplier rho: inputs resized to rho x native size "
                        f"(default {d.resolution})")
    g.add_argument("--model-kw", dest="model_kwargs", type=_model_kw, action="append",
                   metavar="KEY=VALUE", help="extra model option (repeatable), e.g. dropout=0.1")
    g.add_argument("--encoder-weights", metavar="PATH",
                   help="unet_mobilenet_v2: start its encoder from these MobileNetV2 weights (a "
                        "cnnlab run folder or weights file of mobilenet_v2 / mobilenet_v2_cifar / "
                        "unet_mobilenet_v2, or torchvision's mobilenet_v2 state dict saved with "
                        "torch.save)")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir",
                   help="folder or archive with the data (default: $CNNLAB_DATA, ./data, "
                        "../shared/data, and for Fashion-MNIST /usr/share/datasets/fashion-mnist)")
    g.add_argument("--cache-dir",
                   help="decoded-array cache (default $CNNLAB_CACHE or ~/.cache/cnnlab)")
    g.add_argument("--download", action="store_true",
                   help="download the data set with torchvision if it is missing (needs internet)")
    g.add_argument("--subset", type=int, metavar="N",
                   help="train on N images (stratified), test on the same fraction of the test set "
                        "(sst5: N training examples; dev and test stay whole)")
    g.add_argument("--val-fraction", type=float,
                   help=f"validation hold-out: a fraction, or a count if >= 1; 0 = none "
                        f"(default {d.val_fraction}; sst5: any value > 0 validates on the "
                        f"official dev split)")
    g.add_argument("--split-seed", type=int,
                   help=f"seed of the subset and split (default {d.split_seed})")
    g.add_argument("--task-kw", dest="task_kwargs", type=_model_kw, action="append",
                   metavar="KEY=VALUE",
                   help="option of the data set's task (repeatable); sst5: train_on=sentences|"
                        "phrases, min_freq=N (rarer words are <unk>), max_norm=S (Kim 2014's "
                        "constraint on the last layer; 0 = off), prior=train|sentences (train "
                        "phrases for the sentences' class prior); horse/isbi2012: loss=bce|iou|"
                        "dice|bce_dice, size=N")
    g.add_argument("--augment",
                   help=f"'default' (the data set's recipe), 'none', or 'flip,translate=4,"
                        f"pad=reflect|zero,rotate=DEG,cutout=PX' (default {d.augment})")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int,
                   help=f"global batch: images per step over all processes (default "
                        f"{d.batch_size})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=f"default {d.optimizer} (Nesterov)")
    g.add_argument("--momentum", type=float,
                   help=f"SGD momentum / AdamW beta1 (default {d.momentum})")
    g.add_argument("--weight-decay", type=float,
                   help=f"not applied to norm and bias parameters (default {d.weight_decay})")
    g.add_argument("--schedule", choices=SCHEDULES, help=f"default {d.schedule}")
    g.add_argument("--warmup", type=float,
                   help=f"fraction of steps of linear warm-up (default {d.warmup})")
    g.add_argument("--label-smoothing", type=float,
                   help=f"default {d.label_smoothing} (segmentation data sets: 0)")
    g.add_argument("--ema", type=float, metavar="DECAY",
                   help="evaluate an exponential moving average of the weights (e.g. 0.999)")
    g.add_argument("--seed", type=int, help=f"training seed (default {d.seed})")
    g = p.add_argument_group("speed")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction,
                   help="bf16 autocast (default: on for CUDA, off on the CPU)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                   help="NHWC memory format (default: on for CUDA)")
    g.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                   help="torch.compile the model; MODE: default, reduce-overhead (CUDA graphs), "
                        "max-autotune, max-autotune-no-cudagraphs")
    g.add_argument("--tta", action="store_true",
                   help="evaluate with horizontal-flip test-time augmentation")
    g.add_argument("--eval-batch-size", type=int, help=f"default {d.eval_batch_size}")
    add_threads_option(g)
    g = p.add_argument_group("several processes (torch.distributed)")
    g.add_argument("--nproc-per-node", type=int, metavar="N",
                   help="train on N processes of this machine, launched through torchrun "
                        "(gloo on the CPU, NCCL on CUDA); for several machines run torchrun "
                        "yourself: torchrun ... -m cnnlab train ...")
    g.add_argument("--sync-bn", action="store_true",
                   help="with several processes: BatchNorm statistics over the global batch "
                        "(SyncBatchNorm; CUDA only)")
    g = p.add_argument_group("outputs")
    g.add_argument("--out", help="run folder (required)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--quiet", action="store_true",
                   help="one line per epoch instead of progress bars")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard logs (pip install 'cnnlab[tensorboard]')")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The TrainConfig for parsed arguments: saved settings (with --resume), then explicit ones."""
    from cnnlab.engine.config import TrainConfig

    given = {k: v for k, v in vars(args).items()
             if k not in ("func", "command", "argv", "nproc_per_node")}
    if given.get("threads") is None:
        given.pop("threads", None)
    for key in ("model_kwargs", "task_kwargs"):
        if key in given:
            given[key] = dict(given[key])
    if "out" not in given:
        raise UserError("--out DIR is required (the run folder)")
    saved = Path(given["out"]) / "config.json"
    if given.get("resume") and saved.is_file():
        base = TrainConfig.load(saved).to_dict()
        base.pop("threads", None)  # explicit only when given now (see Trainer's resume check)
    else:
        missing = [f"--{k}" for k in ("model", "dataset") if k not in given]
        if missing:
            raise UserError(f"{' and '.join(missing)} required (see cnnlab train --help)")
        from cnnlab.engine.tasks import task_class

        base = {**TrainConfig().to_dict(), **task_class(given["dataset"]).config_defaults}
    return TrainConfig.from_dict({**base, **given}).validate()


def run(args: argparse.Namespace) -> int:

    from cnnlab.engine import TrainingInterrupted, distributed, train

    apply_threads(args)
    config = build_config(args)  # bad settings fail here, before any process is started
    if getattr(args, "nproc_per_node", None) is not None:
        argv = distributed.split_nproc(getattr(args, "argv", None) or sys.argv[1:])[1]
        return distributed.launch(args.nproc_per_node, argv, getattr(args, "threads", None))
    with distributed.session(config.device):  # joins torchrun's process group, if any
        try:
            result = train(config)
        except TrainingInterrupted as exc:
            if distributed.is_main():
                print(f"cnnlab: {exc.message}", file=sys.stderr)
            return 130
    if result is None:  # a rank other than 0: rank 0 reports
        return 0
    best = ("" if result.best_val_accuracy is None else f", best validation accuracy "
            f"{result.best_val_accuracy:.4f} at epoch {result.best_epoch}")
    print(f"test accuracy {result.test_accuracy:.4f}{best}; {result.images_per_s:,.0f} images/s, "
          f"{result.train_time_s:.1f} s of training ({result.wall_time_s:.1f} s in all); "
          f"outputs in {result.out}")
    return 0
