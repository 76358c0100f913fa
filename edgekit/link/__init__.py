"""The device link: COBS framing, the protocol v1 messages (docs/protocol.md), the one place that
opens ports, and a device session with timeouts, retries, resume and reset detection.

Layers, bottom up: :mod:`transport` (bytes over a pyserial URL) -> :mod:`frames` (COBS + header +
CRC-32) -> :mod:`session` (requests, replies, upload, invoke, profile). :mod:`virtual_board` serves
the same protocol on a pty with the real TFLM kernels.
"""
