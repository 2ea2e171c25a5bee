"""Flax models of the paper's experiments: a CIFAR-10 classifier (TRF 74x74) and a CamVid
segmentation network (TRF 164x164, position-dependent), plus the TRF recurrence they document."""
