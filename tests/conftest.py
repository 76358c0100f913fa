"""Shared test set-up: opt-in hardware options and common fixtures."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def pytest_addoption(parser):
    parser.addoption("--port", default=None, help="serial port (or pyserial URL) of a real board")
    parser.addoption("--board", default=None, help="board id of the real board on --port")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--port") and config.getoption("--board"):
        return
    skip = pytest.mark.skip(reason="HARDWARE TEST SKIPPED: pass --port and --board to run it on a real board")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def hw_port(request):
    return request.config.getoption("--port")


@pytest.fixture
def hw_board(request):
    return request.config.getoption("--board")
