"""TFDS builder: CIFAR-10 from the standard "python version" batches, without TensorFlow."""

from __future__ import annotations

import tensorflow_datasets as tfds

from rfjax.data import CIFAR10_CLASSES
from rfjax.datasets import sources


class RfjaxCifar10(tfds.core.GeneratorBasedBuilder):
    """CIFAR-10 read from ``<manual_dir>/cifar10/cifar-10-batches-py/``.

    Features: ``image`` uint8 (S, S, 3) stored as PNG (encoded with PIL, not TensorFlow),
    ``label`` ClassLabel over :data:`rfjax.data.CIFAR10_CLASSES`. Splits ``train`` (all
    ``data_batch_*`` files in numeric order) and ``test`` (``test_batch``), in file order.
    """

    name = "rfjax_cifar10"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: PNG images, array_record."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass as manual dir the folder that holds cifar10/cifar-10-batches-py/ "
        "(data_batch_1 ... data_batch_N, test_batch: the CIFAR-10 'python version')."
    )

    def __init__(self, *, file_format: str | None = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="CIFAR-10 (python batches), built without TensorFlow.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "label": tfds.features.ClassLabel(names=list(CIFAR10_CLASSES)),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the source order: TFDS otherwise shuffles by key hash when writing.
            disable_shuffling=True,
            homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        )

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        return {
            split: self._generate_examples(root, split) for split in ("train", "test")
        }

    def _generate_examples(self, root, split):
        yield from sources.cifar10_examples(root, split)
