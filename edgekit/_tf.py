"""The one door to TensorFlow, tf_keras and TF-MOT.

TF-MOT does not support Keras 3, so TF_USE_LEGACY_KERAS=1 must be set before TensorFlow is first
imported; every module that needs TensorFlow calls :func:`tf` / :func:`keras` / :func:`tfmot` here
instead of importing it itself. Nothing in here runs at edgekit import time.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
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


@contextmanager
def quiet_native():
    """Silence TensorFlow's C++ log lines and converter prints on fd 2 while a block runs.

    With EDGEKIT_DEBUG set nothing is silenced; on an edgekit error the tail of the native log is kept
    in the exception's ``context['native_log']``.
    """
    import sys
    import tempfile
    import warnings

    debug = os.environ.get("EDGEKIT_DEBUG", "") not in ("", "0")
    if debug:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except Exception as e:
            log.seek(0)
            tail = log.read()[-4000:].decode("utf-8", "replace")
            if hasattr(e, "context") and isinstance(e.context, dict):
                e.context["native_log"] = tail   # shown with EDGEKIT_DEBUG=1 reruns
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


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
