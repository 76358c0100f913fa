"""The report and `edgekit convert`'s terminal lines show what pruning bought, as report.json measured it."""
from __future__ import annotations

from edgekit.conversion.payoff import human_lines
from edgekit.report import ReportData, tables, text_notes

CHANNELS = {
    "criterion": "l1", "scope": "layer", "fraction": 0.5,
    "layers": [{"layer": "conv2", "type": "Conv2D", "channels_before": 32, "channels_after": 16,
                "macs_before": 294912, "macs_after": 73728}],
    "unprunable": [{"layer": "logits", "type": "Dense", "reason": "its output is a model output"}],
    "before": {"params": 21546, "macs": 320832, "bytes": 26240, "gzip_bytes": 22629, "arena_bytes": 5840},
    "after": {"params": 5530, "macs": 82592, "bytes": 9152, "gzip_bytes": 6777, "arena_bytes": 3984},
    "change": {"params": -0.7433, "macs": -0.7426, "bytes": -0.6512, "gzip_bytes": -0.7005, "arena_bytes": -0.3178},
    "reference": "the input model through the same quantization and strip pass, no shrinking stage",
    "instructions": "instruction counts: `edgekit profile MODEL --board qemu-m4`",
}
UNSTRUCTURED = {
    "target_sparsity": 0.5, "int8_weight_sparsity": 0.5,
    "reference": {"bytes": 26240, "gzip_bytes": 22629, "macs": 320832, "arena_bytes": 5840},
    "pruned": {"bytes": 26240, "gzip_bytes": 16837, "macs": 320832, "arena_bytes": 5840},
    "runtimes": [
        {"runtime": "TFLM (microcontrollers)", "bytes_before": 26240, "bytes_after": 26240, "macs_before": 320832,
         "macs_after": 320832, "arena_bytes_before": 5840, "arena_bytes_after": 5840, "buys": "nothing: same"},
        {"runtime": "gzip (download / package size)", "bytes_before": 22629, "bytes_after": 16837,
         "buys": "-25.6 % compressed bytes"},
        {"runtime": "LiteRT sparse format (converter EXPERIMENTAL_SPARSITY)", "bytes": 37264, "densify_ops": 4,
         "tflm_missing_ops": ["DENSIFY"], "buys": "37,264 B (+42.0 %)"}],
    "measured_on": "the model right after the prune stage", "speed": "MACs the same",
}


def _data(**convert):
    return ReportData(folder="f", convert={"sizes": {}, **convert}, layer_sizes=[],
                      accuracy={"values": {}, "notes": []})


def test_channel_pruning_tables_and_notes():
    data = _data(channel_pruning=CHANNELS)
    found = {title: rows for title, _h, rows in tables(data)}
    summary = next(rows for title, rows in found.items() if title.startswith("Channel pruning (l1, layer, fraction 0.5)"))
    assert ["MACs (from the .tflite)", 320832, 82592, -74.3] in summary
    assert ["TFLM arena bytes (exact)", 5840, 3984, -31.8] in summary
    per_layer = next(rows for title, rows in found.items() if title.startswith("Channels per layer"))
    assert per_layer == [["conv2", "Conv2D", 32, 16, 294912, 73728]]
    notes = text_notes(data)
    assert "channel pruning kept logits (Dense) whole: its output is a model output" in notes
    lines = human_lines(data.convert)
    assert lines[0].startswith("channel pruning vs the unshrunk model: params 21,546 -> 5,530 (-74 %)")
    assert "arena_bytes 5,840 -> 3,984 (-32 %)" in lines[0]
    assert lines[1] == "  kept whole: logits (Dense): its output is a model output"


def test_unstructured_pruning_is_not_shown_as_a_gain():
    data = _data(unstructured_pruning=UNSTRUCTURED,
                 sparsity={"tflite": [{"tensor": "w", "params": 100, "sparsity": 0.5, "unique_values": 9}]})
    found = {title: rows for title, _h, rows in tables(data)}
    buys = next(rows for title, rows in found.items() if title.startswith("What unstructured pruning buys (50.0 % zeros)"))
    assert buys[0] == ["TFLM (microcontrollers)", 26240, 26240, 320832, 320832, 5840, 5840, "yes"]
    assert buys[2][-1] == "no: DENSIFY" and buys[2][1:3] == [26240, 37264]
    sparsity_title = next(t for t in found if t.startswith("Sparsity of int8 weights"))
    assert "stored and multiplied on TFLM" in sparsity_title
    assert "unstructured pruning on TFLM (microcontrollers): nothing: same" in text_notes(data)
    assert human_lines(data.convert)[1] == "  TFLM (microcontrollers): nothing: same"


def test_no_pruning_no_pruning_tables():
    data = _data()
    assert not [t for t, _h, _r in tables(data) if "pruning" in t.lower()]
    assert human_lines(data.convert) == []
