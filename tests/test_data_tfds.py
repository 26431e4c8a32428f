"""Tests for load_tfds, offline and without TensorFlow.

Two routes: tfds' own mock (``MockPolicy.USE_CODE``: random examples from the
builder's feature specs), and a tiny prepared ``data_dir`` written here in
ArrayRecord format, which exercises the real reading and PNG decoding path.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import tensorflow_datasets as tfds  # a declared dependency

from bayesbinn_jax import data  # noqa: E402
from bayesbinn_jax.data import DataError  # noqa: E402


@pytest.mark.parametrize("name, shape, num_classes", [
    ("mnist", (28, 28, 1), 10),
    ("cifar10", (32, 32, 3), 10),
    ("cifar100", (32, 32, 3), 100),
])
def test_load_tfds_with_mock_data(name, shape, num_classes):
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=9):
    ds = data.load_tfds(name)
  assert isinstance(ds, data.ArrayDataset)
  assert ds.x_train.shape == (9,) + shape and ds.x_test.shape == (9,) + shape
  assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
  assert ds.num_classes == num_classes  # from the metadata, not from the 9 labels
  assert ds.y_train.min() >= 0 and ds.y_train.max() < num_classes


def test_load_tfds_mock_is_deterministic():
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=4):
    a = data.load_tfds("mnist")
    b = data.load_tfds("mnist")
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)


def test_load_tfds_unknown_feature_is_data_error():
  with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, num_examples=2):
    with pytest.raises(DataError) as excinfo:
      data.load_tfds("cifar100", label_key="fine")
  message = str(excinfo.value)
  assert message.startswith("tfds:cifar100: ") and "'fine'" in message
  assert "coarse_label" in message


def test_load_tfds_not_prepared_is_data_error(tmp_path):
  with pytest.raises(DataError) as excinfo:
    data.load_tfds("mnist", data_dir=tmp_path, download=False)
  message = str(excinfo.value)
  assert message.startswith(f"tfds:mnist ({tmp_path}): cannot open split 'train'")
  assert "download=False" in message and "\n" not in message


def test_load_tfds_unknown_name_is_data_error(tmp_path):
  with pytest.raises(DataError, match="tfds:no_such_set_xyz"):
    data.load_tfds("no_such_set_xyz", data_dir=tmp_path, download=False)


def _prepare_tiny_mnist(data_dir, counts, seed=0):
  """Writes a prepared ``mnist`` in ArrayRecord format, as tfds would, without TF.

  Each example is a tf.train.Example proto (tfds' own bundled copy) with the
  image PNG-encoded by PIL, the encoding tfds uses for ``Image`` features.
  """
  from array_record.python import array_record_module as array_record  # tensorflow-datasets's
  from PIL import Image as image_lib  # pillow, a declared dependency
  from tensorflow_datasets.core import file_adapters
  from tensorflow_datasets.core import splits as splits_lib
  from tensorflow_datasets.proto import tf_example_pb2

  builder = tfds.builder("mnist", data_dir=str(data_dir), file_format="array_record")
  folder = builder.data_path
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  truth, infos = {}, []
  for split, count in counts.items():
    images = rng.integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(count) % 3  # every test label is a training label (validate_arrays)
    truth[split] = (images, labels)
    writer = array_record.ArrayRecordWriter(
        str(folder / f"mnist-{split}.array_record-00000-of-00001"), "group_size:1"
    )
    for image, label in zip(images, labels):
      png = io.BytesIO()
      image_lib.fromarray(image[..., 0]).save(png, format="PNG")
      example = tf_example_pb2.Example()
      example.features.feature["image"].bytes_list.value.append(png.getvalue())
      example.features.feature["label"].int64_list.value.append(int(label))
      writer.write(example.SerializeToString())
    writer.close()
    infos.append(splits_lib.SplitInfo(name=split, shard_lengths=[count], num_bytes=0,
                                      filename_template=None))
  builder.info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
  builder.info.set_splits(splits_lib.SplitDict(infos))
  builder.info.write_to_directory(folder)
  return truth


def test_load_tfds_from_prepared_data_dir(tmp_path):
  truth = _prepare_tiny_mnist(tmp_path, {"train": 6, "test": 3})
  ds = data.load_tfds("mnist", data_dir=tmp_path, download=False)
  np.testing.assert_array_equal(ds.x_train, truth["train"][0])
  np.testing.assert_array_equal(ds.y_train, truth["train"][1])
  np.testing.assert_array_equal(ds.x_test, truth["test"][0])
  np.testing.assert_array_equal(ds.y_test, truth["test"][1])
  assert ds.num_classes == 10 and ds.y_test.dtype == np.int32


def test_load_tfds_custom_splits(tmp_path):
  truth = _prepare_tiny_mnist(tmp_path, {"train": 6, "test": 3})
  ds = data.load_tfds("mnist", data_dir=tmp_path, download=False, splits=("train[:4]", "train[4:]"))
  np.testing.assert_array_equal(ds.x_train, truth["train"][0][:4])
  np.testing.assert_array_equal(ds.x_test, truth["train"][0][4:])


def test_without_tensorflow_datasets_the_loader_names_the_extra(monkeypatch):
  # tensorflow-datasets is the optional 'tfds' extra: without it the loader raises the
  # library's DataError naming the source and the install, not a bare ImportError.
  monkeypatch.setitem(__import__("sys").modules, "tensorflow_datasets", None)
  with pytest.raises(DataError, match=r"^tfds:mnist \(/nowhere\): tensorflow-datasets is not "
                                      r"installed .*bayesbinn_jax\[tfds\]"):
    data.load_tfds("mnist", data_dir="/nowhere")
