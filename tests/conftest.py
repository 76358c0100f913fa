"""Shared test set-up: opt-in hardware options and common fixtures."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def pytest_addoption(parser):
    parser.addoption("--port", default=None, help="serial port (or pyserial URL) of a real board")
    parser.addoption("--board", default=None, help="board id of the real board on --port")


# With pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), tests that build or boot firmware, or
# time a device link, run on one worker: they share the firmware cache (one build of each firmware)
# and their bounds assume a core of their own. The Ray tests share one local Ray on another.
_DEVICE_FILES = ("test_fault_campaign.py", "test_faults.py", "test_farm.py", "test_qemu_board.py",
                 "test_emulated_tflm.py", "test_protocol.py", "test_c_core.py", "test_firmware_render.py",
                 "test_export_c_compile.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "qemu" in item.keywords or item.path.name in _DEVICE_FILES:
            item.add_marker(pytest.mark.xdist_group("device"))
        elif item.path.name == "test_sweep_ray.py":
            item.add_marker(pytest.mark.xdist_group("ray"))
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
