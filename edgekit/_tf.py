"""The one door to TensorFlow, tf_keras and TF-MOT.

TF-MOT does not support Keras 3, so TF_USE_LEGACY_KERAS=1 must be set before TensorFlow is first
imported; every module that needs TensorFlow calls :func:`tf` / :func:`keras` / :func:`tfmot` here
instead of importing it itself. Nothing in here runs at edgekit import time.
"""
from __future__ import annotations

import os
from functools import lru_cache

from edgekit.errors import RuntimeMissing

_INSTALL_HINT = "install the model tools: pip install 'edgekit[tf]'"


def _prepare_env() -> None:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "-1")  # no GPU probing noise on CPU machines


@lru_cache(maxsize=None)
def tf():
    _prepare_env()
    try:
        import tensorflow as tf_mod
    except ImportError as e:
        raise RuntimeMissing(f"TensorFlow is not installed ({e})", hint=_INSTALL_HINT) from e
    tf_mod.get_logger().setLevel("ERROR")
    return tf_mod


@lru_cache(maxsize=None)
def keras():
    tf()
    try:
        import tf_keras
    except ImportError as e:
        raise RuntimeMissing("tf_keras is not installed (TF-MOT needs the legacy Keras)",
                             hint=_INSTALL_HINT) from e
    return tf_keras


@lru_cache(maxsize=None)
def tfmot():
    keras()
    try:
        import tensorflow_model_optimization as tfmot_mod
    except ImportError as e:
        raise RuntimeMissing("tensorflow-model-optimization is not installed", hint=_INSTALL_HINT) from e
    return tfmot_mod


def versions() -> dict:
    """Versions of the tools that made an artifact (for report.json)."""
    from importlib import metadata

    out = {}
    for dist in ("edgekit", "tensorflow", "tf_keras", "tensorflow-model-optimization", "ai-edge-litert",
                 "tflite-micro", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out
