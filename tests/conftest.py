"""Test configuration: pick the JAX backend before JAX initialises (the CPU unless
``RFJAX_TEST_PLATFORM`` names another, e.g. ``RFJAX_TEST_PLATFORM=gpu pytest`` on a GPU
machine), Keras's JAX backend before any test imports Keras (its backend is fixed at
import), and the hypothesis profile.

Hypothesis profiles (``HYPOTHESIS_PROFILE``): ``repro`` (the default) draws the same examples
on every run, so a suite that passes here passes in CI and a failure reproduces with the same
command; ``explore`` draws new ones on every run (``RFJAX_HYPOTHESIS_EXAMPLES`` raises the
counts) to hunt for new failures, which then become ``@example`` cases."""

import os

PLATFORM = os.environ.get("RFJAX_TEST_PLATFORM", "cpu").lower()
if PLATFORM not in ("cpu", "gpu", "cuda", "tpu"):
    raise RuntimeError(f"RFJAX_TEST_PLATFORM must be cpu, gpu or tpu, got {PLATFORM!r}")
os.environ["JAX_PLATFORMS"] = PLATFORM
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("RFJAX_NO_PROGRESS", "1")

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("repro", derandomize=True, database=None)
settings.register_profile("explore", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repro"))

jax.config.update("jax_platforms", PLATFORM)
if PLATFORM != "cpu":  # the oracles (direct jax.grad) at full float32, like rfjax.erf's default
    jax.config.update("jax_default_matmul_precision", "highest")
