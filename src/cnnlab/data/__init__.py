"""Real data for training: CIFAR-10 and Fashion-MNIST, splits, resizing, batched augmentation;
SST-5 sentences and phrases for sentiment (:mod:`cnnlab.data.sst`); Weizmann horses and ISBI 2012
membranes for binary segmentation (:mod:`cnnlab.data.segmentation`).

- :func:`load_dataset` finds, decodes (once, then from a cache) and checks a data set; see
  :mod:`cnnlab.data.datasets` for where it looks and which file layouts it reads.
- :func:`make_splits` turns it into the tensors one run uses: seeded stratified subset and
  validation split, resolution multiplier, on the training device (:mod:`cnnlab.data.splits`).
- :class:`Augment` augments a batch with tensor ops on its own device
  (:mod:`cnnlab.data.augment`, with the per-dataset recipes).

Example::

    from cnnlab.data import load_dataset, make_splits
    ds = load_dataset("fashion-mnist")           # (60000, 28, 28, 1) uint8 + labels, cached
    splits = make_splits(ds, val_fraction=0.1, subset=5000, resolution=1.0, device="cpu")
    splits.train_images.shape                    # torch.Size([4500, 1, 28, 28]), uint8
"""

from cnnlab.data.augment import (
    AUGMENT_RECIPES,
    Augment,
    cutout,
    hflip,
    normalize,
    rotate,
    translate,
)
from cnnlab.data._images import read_image
from cnnlab.data.datasets import (
    CIFAR10_CLASSES,
    DATASETS,
    FASHION_MNIST_CLASSES,
    SEGMENTATION_DATASETS,
    Dataset,
    default_cache_dir,
    default_data_dirs,
    find_source,
    load_dataset,
)
from cnnlab.data.segmentation import (
    SegmentationDataset,
    SegmentationSplits,
    augment_pair,
    load_segmentation,
    segmentation_splits,
)
from cnnlab.data.sst import SST_CLASSES, SSTData, Vocabulary, load_sst
from cnnlab.data.splits import (
    Splits,
    class_subset,
    make_splits,
    per_class_indices,
    resize_images,
    resized_size,
    stratified_indices,
    train_val_indices,
)

__all__ = [
    "AUGMENT_RECIPES", "Augment", "CIFAR10_CLASSES", "DATASETS", "Dataset", "FASHION_MNIST_CLASSES",
    "SEGMENTATION_DATASETS", "SegmentationDataset", "SegmentationSplits", "Splits", "augment_pair",
    "class_subset", "cutout", "default_cache_dir", "default_data_dirs", "find_source", "hflip",
    "load_dataset", "load_segmentation", "load_sst", "make_splits", "normalize", "per_class_indices",
    "read_image", "resize_images", "resized_size", "rotate", "segmentation_splits", "SST_CLASSES",
    "SSTData", "Vocabulary",
    "stratified_indices", "train_val_indices", "translate",
]
