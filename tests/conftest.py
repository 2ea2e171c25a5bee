"""Test configuration: pick the JAX backend before JAX initialises (the CPU unless
``RFJAX_TEST_PLATFORM`` names another, e.g. ``RFJAX_TEST_PLATFORM=gpu pytest`` on a GPU
machine), and Keras's JAX backend before any test imports Keras (its backend is fixed at
import)."""

import os

PLATFORM = os.environ.get("RFJAX_TEST_PLATFORM", "cpu").lower()
if PLATFORM not in ("cpu", "gpu", "cuda", "tpu"):
    raise RuntimeError(f"RFJAX_TEST_PLATFORM must be cpu, gpu or tpu, got {PLATFORM!r}")
os.environ["JAX_PLATFORMS"] = PLATFORM
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("RFJAX_NO_PROGRESS", "1")

import jax  # noqa: E402

jax.config.update("jax_platforms", PLATFORM)
if PLATFORM != "cpu":  # the oracles (direct jax.grad) at full float32, like rfjax.erf's default
    jax.config.update("jax_default_matmul_precision", "highest")
