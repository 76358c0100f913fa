"""The conformance suite's devices: every test taking ``device`` runs once per registered device.

``device_factories`` maps a name to a :class:`DeviceFactory`. Built in: ``virtual`` (the Python
virtual board, always) and ``hardware`` (the board on --port/--board; skipped without them). More
devices plug in without editing this file: a module ``tests/conformance/device_<name>.py`` that
defines ``register(device_factories)`` is imported here, e.g. the QEMU board::

    def register(factories):
        factories["qemu-m4"] = DeviceFactory(start=start_qemu_board, marks=(pytest.mark.qemu,))

``start(request)`` is a context manager yielding a :class:`DeviceUnderTest`.
"""
from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import pytest

from conformance.linkkit import digits_model, model_cache_dir, tiny_float_model, tiny_model  # noqa: F401


@dataclass
class DeviceUnderTest:
    name: str
    port: str
    baud: int = 115200
    pristine: bool = True          # starts with no active model and no partial upload
    can_reset: bool = True         # RESET is safe to send (the device comes back on the same port)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class DeviceFactory:
    start: Callable[[pytest.FixtureRequest], ContextManager[DeviceUnderTest]]
    marks: tuple = ()


@contextmanager
def _virtual(request):
    from edgekit.link.virtual_board import VirtualBoard

    board = VirtualBoard(max_payload=1028)
    port = board.start()
    try:
        yield DeviceUnderTest("virtual", port, extra={"board": board})
    finally:
        board.stop()


@contextmanager
def _hardware(request):
    port = request.config.getoption("--port")
    board_id = request.config.getoption("--board")
    from edgekit.boards import load_board

    board = load_board(board_id)
    # A RESET re-enumerates many USB boards (the port vanishes); opt in with EDGEKIT_HW_RESET=1
    # for boards that come back on the same port (a UART behind a separate USB bridge).
    yield DeviceUnderTest("hardware", port, baud=board.baud, pristine=False,
                          can_reset=os.environ.get("EDGEKIT_HW_RESET") == "1",
                          extra={"board_id": board_id})


device_factories: dict[str, DeviceFactory] = {
    "virtual": DeviceFactory(_virtual),
    "hardware": DeviceFactory(_hardware, marks=(pytest.mark.hardware,)),
}

for _plugin in sorted(Path(__file__).parent.glob("device_*.py")):
    _spec = importlib.util.spec_from_file_location(f"conformance_{_plugin.stem}", _plugin)
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
    _mod.register(device_factories)


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        params = [pytest.param(name, marks=list(f.marks), id=name) for name, f in device_factories.items()]
        metafunc.parametrize("device", params, indirect=True)


@pytest.fixture
def device(request):
    factory = device_factories[request.param]
    with factory.start(request) as dut:
        yield dut
