"""The schema name of every JSON document edgekit writes, in one place.

Every ``--json`` document carries one as its ``schema`` key (docs/cli.md lists them). A name changes
its version number when a key is removed or changes meaning; new keys keep it.
"""
from __future__ import annotations

ERROR = "edgekit.error/1"
BOARDS = "edgekit.boards/1"
DEVICES = "edgekit.devices/1"
DOCTOR = "edgekit.doctor/1"
CONVERT = "edgekit.convert/1"          # report.json of an artifact folder
INSPECT = "edgekit.inspect/1"
EXPORT = "edgekit.export/1"
FLASH = "edgekit.flash/1"
VIRTUAL_BOARD = "edgekit.virtual-board/1"
PROFILE = "edgekit.profile/1"
VALIDATE = "edgekit.validate/1"
FINETUNE = "edgekit.finetune/1"
REPORT = "edgekit.report/1"
SWEEP = "edgekit.sweep/1"
FARM_PLACES = "edgekit.farm-places/1"
FARM_PROFILE = "edgekit.farm-profile/1"     # also comparison.json of a farm run
DIAGNOSE = "edgekit.diagnose/1"

# command -> the schema of its --json document
BY_COMMAND = {"boards": BOARDS, "devices": DEVICES, "doctor": DOCTOR, "convert": CONVERT, "inspect": INSPECT,
              "export": EXPORT, "flash": FLASH, "virtual-board": VIRTUAL_BOARD, "profile": PROFILE,
              "validate": VALIDATE, "finetune": FINETUNE, "report": REPORT, "sweep": SWEEP,
              "farm places": FARM_PLACES, "farm profile": FARM_PROFILE, "diagnose": DIAGNOSE}
ALL = frozenset(BY_COMMAND.values()) | {ERROR}
