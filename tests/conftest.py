"""Test configuration: force the CPU backend before JAX initialises, and Keras's JAX backend
before any test imports Keras (its backend is fixed at import)."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("RFJAX_NO_PROGRESS", "1")

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
