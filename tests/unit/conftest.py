"""Fixtures for the model / export unit tests: tiny models built once per session."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tinymodels  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tinymodels.TinyModels:
    return tinymodels.TinyModels(tmp_path_factory.mktemp("tiny_models"))
