import numpy as np
import pytest

from edgekit.conversion.data import Dataset, calibration_warning, check_dataset, load_data
from edgekit.errors import DataError, InputFileError


def test_npz_with_x_y(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((5, 8, 8, 1), np.float64), y=np.arange(5))
    ds = load_data(p, (8, 8, 1), need_labels=True)
    assert ds.x.dtype == np.float32 and ds.x.shape == (5, 8, 8, 1)
    assert ds.y.tolist() == [0, 1, 2, 3, 4] and ds.is_classification


def test_npz_train_pair_and_uint8_cast(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x_train=np.full((3, 4), 255, np.uint8), y_train=np.array([1, 0, 1]))
    ds = load_data(p, (4,))
    assert ds.x.dtype == np.float32 and float(ds.x.max()) == 255.0


def test_wrong_shape_names_both(tmp_path):
    p = tmp_path / "d.npy"
    np.save(p, np.zeros((5, 28, 28), np.float32))
    with pytest.raises(DataError, match=r"samples have shape \(28, 28\) but the model input is \(8, 8, 1\)"):
        load_data(p, (8, 8, 1))


def test_nan_count_and_first_index(tmp_path):
    x = np.zeros((4, 3), np.float32)
    x[2, 1] = np.nan
    x[3, 0] = np.inf
    p = tmp_path / "d.npy"
    np.save(p, x)
    with pytest.raises(DataError, match=r"2 NaN/inf value\(s\); the first at index \(2, 1\)"):
        load_data(p, (3,))


def test_non_numeric_dtype_refused():
    with pytest.raises(DataError, match="not numbers"):
        check_dataset(Dataset(np.array([["a", "b"]])), None, need_labels=False)


def test_labels_needed_for_eval(tmp_path):
    p = tmp_path / "x.npy"
    np.save(p, np.zeros((3, 2), np.float32))
    with pytest.raises(DataError, match="no labels"):
        load_data(p, (2,), need_labels=True)


def test_label_count_mismatch(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((3, 2)), y=np.zeros(2))
    with pytest.raises(DataError, match="3 samples but 2 labels"):
        load_data(p, (2,))


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        load_data(tmp_path / "none.npz")
    (tmp_path / "d.txt").write_text("1,2")
    with pytest.raises(DataError, match="unknown data format"):
        load_data(tmp_path / "d.txt")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable"):
        load_data(tmp_path / "bad.npz")


def test_csv_with_label_column_reshaped(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,b,c,d,label\n0,1,2,3,1\n4,5,6,7,0\n")
    ds = load_data(p, (2, 2, 1), need_labels=True)
    assert ds.x.shape == (2, 2, 2, 1) and ds.y.tolist() == [1, 0]
    assert ds.x[1].ravel().tolist() == [4, 5, 6, 7]


def test_image_folder(tmp_path):
    from PIL import Image

    for cls, value in (("cat", 10), ("dog", 200)):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((16, 16), value, np.uint8)).save(tmp_path / cls / f"{i}.png")
    ds = load_data(tmp_path, (8, 8, 1), need_labels=True)
    assert ds.x.shape == (4, 8, 8, 1) and ds.class_names == ["cat", "dog"]
    assert ds.y.tolist() == [0, 0, 1, 1]
    assert ds.x[0].max() == pytest.approx(10 / 255) and ds.x[3].min() == pytest.approx(200 / 255)


def test_calibration_warning():
    assert calibration_warning(20) and "20" in calibration_warning(20)
    assert calibration_warning(300) is None


def test_integer_calibration_data_far_outside_the_eval_range_is_named_with_numbers(tmp_path):
    from edgekit.conversion.data import calibration_checks

    p = tmp_path / "calib.npz"
    np.savez(p, x=(np.arange(300 * 4) % 256).reshape(300, 4).astype(np.int64))
    calib = load_data(p, (4,))
    assert calib.x.dtype == np.float32 and calib.raw_dtype == "int64"
    assert calib.head(10).raw_dtype == "int64"
    ref = check_dataset(Dataset(np.linspace(0, 16, 40).reshape(10, 4)), (4,), need_labels=False)
    facts, warnings = calibration_checks(calib, ref)
    assert warnings == ["calibration data spans 0..255 but the evaluation data spans 0..16: 15.9x as wide; "
                        "int64 values; int8 ranges come from the calibration data: scale both the same way"]
    assert facts["dtype"] == "int64" and (facts["min"], facts["max"]) == (0.0, 255.0)
    assert facts["reference"] == {"what": "evaluation data", "min": 0.0, "max": 16.0}
    # without evaluation data the integer dtype alone is named, with its values
    _, alone = calibration_checks(calib)
    assert len(alone) == 1 and "stored as int64 (values 0..255)" in alone[0]


def test_calibration_range_checks_stay_quiet_for_matching_float_data():
    from edgekit.conversion.data import calibration_checks

    rng = np.random.default_rng(0)
    calib = check_dataset(Dataset(rng.uniform(0, 1, (300, 4))), (4,), need_labels=False)
    ref = check_dataset(Dataset(rng.uniform(0, 1, (50, 4))), (4,), need_labels=False)
    assert calibration_checks(calib, ref)[1] == []
    assert calibration_checks(calib)[1] == []
    # far too narrow (0..1 calibration for 0..255 evaluation) and shifted (-1..1 for 0..1) are named
    wide = check_dataset(Dataset(rng.uniform(0, 255, (50, 4))), (4,), need_labels=False)
    assert "x narrower" in calibration_checks(calib, wide)[1][0]
    shifted = check_dataset(Dataset(rng.uniform(-1, 1, (300, 4))), (4,), need_labels=False)
    assert "calibration data spans -0.99" in calibration_checks(shifted, ref)[1][0]
