"""Conformance devices running the portable C core (firmware_templates/core):

- ``c-host``: the core built for this computer with AddressSanitizer + UBSan, on a pty of its own;
- ``qemu-m4-test``: the protocol test firmware cross-compiled for Cortex-M4, on QEMU mps2-an386
  (marked ``qemu``).

Both run the deterministic test runner (core/ek_test_runner.h), not TFLM: tests that compare outputs
with host TFLM are skipped for them (their own tests check the documented transform instead:
tests/integration/test_c_core.py, tests/integration/test_qemu_board.py). The real-TFLM emulated
board is device_qemu_tflm.py.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager

import pytest

# Tests whose expected outputs come from running a .tflite model on the host.
NEEDS_TFLM = {"test_invoke_matches_host_tflm", "test_staged_input_and_tensor_read"}

_built: dict[str, object] = {}


def _skip_tflm_only(request, name: str) -> None:
    if request.node.originalname in NEEDS_TFLM:
        pytest.skip(f"{name} runs the test transform of core/ek_test_runner.h, not TFLM")


def _build_once(key: str, request, build):
    if key not in _built:
        out = request.getfixturevalue("tmp_path_factory").mktemp(key)
        _built[key] = build(out)
    return _built[key]


@contextmanager
def _c_host(request):
    from conformance.conftest import DeviceUnderTest
    from edgekit.runners import qemu as qemu_runner

    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    _skip_tflm_only(request, "c-host")
    binary = _build_once("c-host", request, lambda out: qemu_runner.build_host_core(
        out, sanitize=True, defines={"EK_MAX_PAYLOAD": "1024u", "EK_MODEL_MAX": "65536u"}))
    proc = qemu_runner.HostCoreProcess(binary)
    port = proc.start()
    try:
        proc.boot()
        yield DeviceUnderTest("c-host", port, extra={"process": proc})
        output = proc.output()
        assert "Sanitizer" not in output and "runtime error" not in output, output
    finally:
        proc.stop()


@contextmanager
def _qemu_m4(request):
    from conformance.conftest import DeviceUnderTest
    from edgekit.runners import qemu as qemu_runner

    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("needs qemu-system-arm and arm-none-eabi-gcc")
    _skip_tflm_only(request, "qemu-m4-test")
    elf = _build_once("qemu-m4-test", request, qemu_runner.build_test_firmware)
    machine = qemu_runner.QemuMachine(elf)
    port = machine.start()
    try:
        machine.boot()
        yield DeviceUnderTest("qemu-m4-test", port, extra={"machine": machine})
    finally:
        machine.stop()


def register(factories):
    from conformance.conftest import DeviceFactory

    factories["c-host"] = DeviceFactory(_c_host)
    factories["qemu-m4-test"] = DeviceFactory(_qemu_m4, marks=(pytest.mark.qemu,))
