"""Calibration and evaluation data: loading and checking, before any model work starts.

Formats (see docs/data.md):
- ``.npz``: arrays ``x`` (samples) and, for evaluation, ``y`` (labels). ``x_train``/``y_train`` or
  ``x_test``/``y_test`` are accepted when ``x`` is absent and only one such pair exists.
- ``.npy``: samples only.
- a folder of images with one sub-folder per class (sub-folder names sorted = class ids).
- ``.csv``: one sample per row; a column named ``label`` (or ``y``, ``target``, ``class``) holds the
  label; all other columns are features, reshaped to the model input.
Checks: sample shape against the model input (a message names both), a cast to float32 (non-numeric
data is refused), NaN/inf rejected with their count and first index, labels present when needed.
Calibration data stored as integers, or far outside the evaluation data's range, is warned about
with the numbers (:func:`calibration_checks`).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgekit.errors import DataError, InputFileError

MIN_CALIBRATION_SAMPLES = 100
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".pgm", ".ppm"}
LABEL_COLUMNS = ("label", "y", "target", "class")


@dataclass
class Dataset:
    x: np.ndarray                       # float32, (N, *input_shape)
    y: Optional[np.ndarray] = None      # (N,) int64 class ids, or (N, ...) float targets
    source: str = ""
    class_names: list[str] = field(default_factory=list)
    raw_dtype: str = ""                 # dtype of the samples as stored, before the cast to float32

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def is_classification(self) -> bool:
        return self.y is not None and np.issubdtype(self.y.dtype, np.integer)

    def head(self, n: int) -> "Dataset":
        return Dataset(self.x[:n], None if self.y is None else self.y[:n], self.source, self.class_names,
                       self.raw_dtype)


def load_data(path: str | os.PathLike, input_shape: Sequence[Optional[int]] | None = None, *,
              need_labels: bool = False, what: str = "data") -> Dataset:
    """Load and check a data file or folder. ``input_shape`` excludes the batch dimension."""
    p = Path(path)
    if not p.exists():
        raise InputFileError(f"{what} not found: {p}")
    if p.is_dir():
        ds = _load_image_folder(p, input_shape)
    else:
        suffix = p.suffix.lower()
        if suffix == ".npz":
            ds = _load_npz(p)
        elif suffix == ".npy":
            ds = _load_npy(p)
        elif suffix == ".csv":
            ds = _load_csv(p, input_shape)
        else:
            raise DataError(f"{what} {p.name}: unknown data format '{suffix or 'no suffix'}'",
                            hint="use .npz (x, y), .npy, .csv or a folder of images per class")
    ds.source = str(p)
    return check_dataset(ds, input_shape, need_labels=need_labels, what=f"{what} {p.name}")


def check_dataset(ds: Dataset, input_shape: Sequence[Optional[int]] | None, *, need_labels: bool,
                  what: str = "data") -> Dataset:
    x = ds.x
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise DataError(f"{what}: samples are of type {x.dtype}, not numbers",
                        hint="store numeric arrays (float or integer)")
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{what}: holds no samples")
    raw_dtype = ds.raw_dtype or str(x.dtype)
    x = x.astype(np.float32, copy=False)
    if input_shape is not None:
        want = tuple(input_shape)
        got = tuple(x.shape[1:])
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            shown = "(" + ", ".join("?" if w is None else str(w) for w in want) + ")"
            raise DataError(f"{what}: samples have shape {got} but the model input is {shown}",
                            hint="reshape the data so each sample matches the model input "
                                 "(the first axis counts samples)")
    bad = ~np.isfinite(x)
    if bad.any():
        count = int(bad.sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(f"{what}: {count} NaN/inf value(s); the first at index {first}",
                        hint="clean or drop those samples")
    y = ds.y
    if y is not None:
        if len(y) != len(x):
            raise DataError(f"{what}: {len(x)} samples but {len(y)} labels")
        if y.dtype == object or not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{what}: labels are of type {y.dtype}, not numbers")
        if np.issubdtype(y.dtype, np.floating):
            if not np.isfinite(y).all():
                raise DataError(f"{what}: labels contain NaN/inf")
            if y.ndim == 1 and np.all(y == np.round(y)):
                y = y.astype(np.int64)
        else:
            y = y.astype(np.int64)
    elif need_labels:
        raise DataError(f"{what}: no labels; evaluation needs them",
                        hint="store labels as 'y' in the .npz (or a 'label' CSV column)")
    return Dataset(x, y, ds.source, ds.class_names, raw_dtype)


def _load_npz(p: Path) -> Dataset:
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.keys())
            if "x" in keys:
                xk, yk = "x", "y"
            else:
                pairs = [k for k in keys if k.startswith("x_") and f"y_{k[2:]}" in keys]
                if len(pairs) != 1:
                    raise DataError(f"{p.name}: no array named 'x' (found: {', '.join(keys) or 'none'})",
                                    hint="save with np.savez(path, x=samples, y=labels)")
                xk, yk = pairs[0], "y_" + pairs[0][2:]
            x = z[xk]
            y = z[yk] if yk in keys else None
            names = [str(s) for s in z["class_names"]] if "class_names" in keys else []
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{p.name} is not a readable .npz file: {e}") from e
    return Dataset(x, y, class_names=names)


def _load_npy(p: Path) -> Dataset:
    try:
        x = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{p.name} is not a readable .npy file: {e}") from e
    return Dataset(x)


def _load_csv(p: Path, input_shape) -> Dataset:
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {p.name}: {e}") from e
    if not rows:
        raise DataError(f"{p.name} is empty")
    header = None
    try:
        [float(v) for v in rows[0]]
    except ValueError:
        header, rows = [h.strip().lower() for h in rows[0]], rows[1:]
    try:
        table = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{p.name}: non-numeric value ({e})") from e
    if table.ndim != 2:
        raise DataError(f"{p.name}: rows have different numbers of columns")
    y = None
    if header is not None:
        label_cols = [i for i, h in enumerate(header) if h in LABEL_COLUMNS]
        if label_cols:
            li = label_cols[0]
            y = table[:, li]
            table = np.delete(table, li, axis=1)
    x = table
    if input_shape is not None and all(d is not None for d in input_shape):
        want = int(np.prod(input_shape))
        if x.shape[1] == want:
            x = x.reshape((len(x), *input_shape))
    return Dataset(x, y)


def _load_image_folder(p: Path, input_shape) -> Dataset:
    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{p} holds no class sub-folders",
                        hint="put images in one sub-folder per class: data/cat/1.png, data/dog/2.png")
    try:
        from PIL import Image
    except ImportError as e:
        from edgekit.errors import RuntimeMissing

        raise RuntimeMissing("reading image folders needs Pillow", hint="pip install pillow") from e
    height = width = channels = None
    if input_shape is not None and len(input_shape) == 3:
        height, width, channels = input_shape
    xs, ys = [], []
    for ci, name in enumerate(classes):
        files = sorted(f for f in (p / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as im:
                    im = im.convert("L" if channels == 1 else "RGB")
                    if height and width:
                        im = im.resize((width, height))
                    arr = np.asarray(im, dtype=np.float32) / 255.0
            except OSError as e:
                raise DataError(f"{f} is not a readable image: {e}") from e
            if arr.ndim == 2:
                arr = arr[..., None]
            xs.append(arr)
            ys.append(ci)
    if not xs:
        raise DataError(f"{p}: no images found in the class folders")
    shapes = {a.shape for a in xs}
    if len(shapes) > 1:
        raise DataError(f"{p}: images have different sizes {sorted(shapes)[:3]}",
                        hint="give a model (its input size is used to resize) or resize the images")
    return Dataset(np.stack(xs), np.array(ys, dtype=np.int64), class_names=classes)


# Calibration values reaching further than this share of the reference span beyond the reference
# range, or covering less than 1 / this of it, are "far outside" it.
RANGE_OUTSIDE_SHARE = 0.5
RANGE_NARROW_FACTOR = 4.0


def value_range(x: np.ndarray) -> tuple[float, float]:
    return float(np.min(x)), float(np.max(x))


def _num(v: float) -> str:
    return f"{v:.4g}"


def calibration_checks(calib: Dataset, reference: Dataset | None = None, *,
                       reference_what: str = "evaluation data") -> tuple[dict, list[str]]:
    """Range and dtype of the calibration samples, and warnings with the numbers when they look wrong.

    Warned about: samples stored as integers (they are cast to float32 as they are, so 0..255 pixels
    stay 0..255 for a model trained on 0..1), and a calibration range far from ``reference``'s (the
    data the model is evaluated on): reaching more than half the reference span beyond it, or
    covering less than a quarter of it. int8 ranges come from the calibration data, so either one
    makes the quantized model clip or waste its 256 levels. Returns (facts for report.json, warnings).
    """
    lo, hi = value_range(calib.x)
    raw_dtype = calib.raw_dtype or str(calib.x.dtype)
    facts: dict = {"samples": len(calib), "dtype": raw_dtype, "min": lo, "max": hi}
    warnings: list[str] = []
    integer = np.issubdtype(np.dtype(raw_dtype), np.integer) if raw_dtype else False
    if reference is not None:
        r_lo, r_hi = value_range(reference.x)
        facts["reference"] = {"what": reference_what, "min": r_lo, "max": r_hi}
        r_span, c_span = r_hi - r_lo, hi - lo
        scale = max(abs(r_lo), abs(r_hi), 1e-12)
        tol = RANGE_OUTSIDE_SHARE * (r_span if r_span > 0 else scale)
        outside = lo < r_lo - tol or hi > r_hi + tol
        narrow = r_span > 0 and c_span * RANGE_NARROW_FACTOR < r_span
        if outside or narrow:
            if r_span > 0 and c_span > 0:
                ratio = c_span / r_span
                times = f"{ratio:.3g}x as wide" if ratio >= 1 else f"{1 / ratio:.3g}x narrower"
            else:
                times = "a different range"
            facts["span_ratio"] = (c_span / r_span) if r_span > 0 else None
            warnings.append(f"calibration data spans {_num(lo)}..{_num(hi)} but the {reference_what} spans "
                            f"{_num(r_lo)}..{_num(r_hi)}: {times}"
                            + (f"; {raw_dtype} values" if integer else "")
                            + "; int8 ranges come from the calibration data: scale both the same way")
    if integer and not warnings:
        warnings.append(f"calibration data is stored as {raw_dtype} (values {_num(lo)}..{_num(hi)}); it is "
                        "cast to float32 as it is: check the model expects that scale (not, say, 0..1)")
    return facts, warnings


def calibration_warning(n: int) -> str | None:
    if n < MIN_CALIBRATION_SAMPLES:
        return (f"only {n} calibration samples; int8 ranges may be poor "
                f"(use at least {MIN_CALIBRATION_SAMPLES})")
    return None
