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
