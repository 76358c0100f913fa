"""Conformance device ``qemu-m4``: the runner firmware with real TFLM + CMSIS-NN kernels, cross-compiled
for Cortex-M4 from a TFLM source tree (EDGEKIT_TFLM_SRC) and run on QEMU mps2-an386 with -icount.

Its op set covers the suite's models, so every test runs on it, the comparisons with host TFLM
included. Without qemu-system-arm, the cross compiler or a tree it is skipped with a loud reason.
"""
from __future__ import annotations

from contextlib import contextmanager

import pytest

_built: dict[str, object] = {}


@contextmanager
def _qemu_tflm(request):
    from conformance.conftest import DeviceUnderTest
    from edgekit.boards import load_board
    from edgekit.runners.qemu import QemuRunner
    from tflm_trees import require_tree

    tree = require_tree("tflite-micro")
    runner = QemuRunner(load_board("qemu-m4"), options={"tflm_src": str(tree.root)})
    if "elf" not in _built:
        models = [request.getfixturevalue(name) for name in ("tiny_model", "tiny_float_model", "digits_model")]
        _built["elf"] = runner.build_for(models).elf
    machine = runner.start_machine(_built["elf"])
    try:
        yield DeviceUnderTest("qemu-m4", machine.port, extra={"machine": machine})
    finally:
        machine.stop()


def register(factories):
    from conformance.conftest import DeviceFactory

    # the first test builds the firmware (a minute or two with an empty object cache): a longer bound
    factories["qemu-m4"] = DeviceFactory(_qemu_tflm, marks=(pytest.mark.qemu, pytest.mark.timeout(1500)))
