"""Data sets for BayesBiNN as plain NumPy arrays.

Loaders (``.npz``, MNIST IDX files, class folders of image files or a tar of
them, tfds without TensorFlow, Snelson,
out-of-distribution images), the two moons generator, validation of arrays,
fitting their layout to a network's input shape, the 10% validation split,
permuted MNIST, seeded minibatches and CIFAR augmentation. The training
engine converts the arrays to ``jax`` arrays.
"""

from bayesbinn_jax.data.augment import augment_cifar, pad_crop_flip
from bayesbinn_jax.data.batching import epoch_order, examples_left_out, iterate_batches, num_batches
from bayesbinn_jax.data.dataset import ArrayDataset, RegressionDataset
from bayesbinn_jax.data.errors import DataError
from bayesbinn_jax.data.image_folder import (
    ImageFolderData,
    ImageFolderDataset,
    ImageFolderError,
    default_cache_dir,
    image_folder_fingerprint,
    is_image_folder_source,
    load_image_folder,
)
from bayesbinn_jax.data.idx import MNIST_IDX_FILES, load_idx_dir, parse_idx, read_idx
from bayesbinn_jax.data.npz import load_npz, read_npz
from bayesbinn_jax.data.ood import load_ood_images
from bayesbinn_jax.data.permuted import permute_pixels, permuted_tasks, task_permutations
from bayesbinn_jax.data.preprocess import channel_mean_std, images_to_float
from bayesbinn_jax.data.rng import SeedLike, as_generator
from bayesbinn_jax.data.shapes import ExpectedShape, describe_shape, fit_images, fit_input_shape
from bayesbinn_jax.data.snelson import load_snelson
from bayesbinn_jax.data.split import num_validation, split_validation, train_val_split
from bayesbinn_jax.data.tfds_loader import load_tfds
from bayesbinn_jax.data.two_moons import make_moons, two_moons
from bayesbinn_jax.data.validation import (NORMALISATIONS, UnseenLabelsError, check_unseen_labels,
                                           check_value_range, unseen_labels, validate_arrays,
                                           validate_regression_arrays)

__all__ = [
    "ArrayDataset",
    "DataError",
    "ExpectedShape",
    "ImageFolderData",
    "ImageFolderDataset",
    "ImageFolderError",
    "MNIST_IDX_FILES",
    "NORMALISATIONS",
    "RegressionDataset",
    "SeedLike",
    "UnseenLabelsError",
    "as_generator",
    "augment_cifar",
    "channel_mean_std",
    "default_cache_dir",
    "check_unseen_labels",
    "check_value_range",
    "describe_shape",
    "epoch_order",
    "examples_left_out",
    "fit_images",
    "fit_input_shape",
    "image_folder_fingerprint",
    "images_to_float",
    "is_image_folder_source",
    "iterate_batches",
    "load_idx_dir",
    "load_image_folder",
    "load_npz",
    "load_ood_images",
    "load_snelson",
    "load_tfds",
    "make_moons",
    "num_batches",
    "num_validation",
    "pad_crop_flip",
    "parse_idx",
    "permute_pixels",
    "permuted_tasks",
    "read_idx",
    "read_npz",
    "split_validation",
    "task_permutations",
    "train_val_split",
    "two_moons",
    "unseen_labels",
    "validate_arrays",
    "validate_regression_arrays",
]
