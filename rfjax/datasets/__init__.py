"""TensorFlow Datasets builders for the paper's data, usable without TensorFlow.

``RfjaxCifar10`` (CIFAR-10 from the "python version" batches) and ``RfjaxCamvid`` (CamVid in
the SegNet layout) both read a source folder given as TFDS's *manual dir* (the folder holding
``cifar10/cifar-10-batches-py/`` and ``camvid/``) and write ``array_record`` files by default,
which ``tfds.data_source`` reads back as numpy without TensorFlow. Importing this package
imports ``tensorflow_datasets``; :mod:`rfjax.data` imports it only when a dataset is loaded.
"""

from rfjax.datasets.camvid import RfjaxCamvid
from rfjax.datasets.cifar10 import RfjaxCifar10

__all__ = ["RfjaxCamvid", "RfjaxCifar10"]
