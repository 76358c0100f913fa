"""TFLite-Micro source trees on this machine, and firmware built from them.

:mod:`edgekit.tflm.tree` finds and describes a tree (an Arduino TFLM library as arduino-cli installs
it, or a tflite-micro checkout with its third-party downloads): its layout, version, the ops its
``MicroMutableOpResolver`` offers, and features that decide whether a model runs correctly on it.
:mod:`edgekit.tflm.compat` checks a model against those facts (or the facts a board file records).
:mod:`edgekit.tflm.build` cross-compiles the runner firmware from a tree, caching objects.
"""
