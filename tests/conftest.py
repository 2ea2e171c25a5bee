"""Test configuration: force the CPU backend before JAX initialises."""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("KERAS_BACKEND", "jax")  # rfjax runs Keras models on JAX only
os.environ.setdefault("RFJAX_NO_PROGRESS", "1")

import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
