"""edgekit.fileio: stale temp files of edgekit's own naming are cleaned, nobody else's; output folders
are checked before work and made only when something is written."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edgekit import fileio
from edgekit.errors import OutputError


def _dead_pid() -> int:
    """The pid of a process that has exited (and was reaped): no process has it right now."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _make(folder, name, *, age_s: float):
    p = folder / name
    p.write_bytes(b"half a model")
    t = time.time() - age_s
    os.utime(p, (t, t))
    return p


def test_temp_names_carry_the_writer_pid_and_leave_nothing_behind(tmp_path):
    fileio.write_group(tmp_path, {"model.tflite": b"m", "report.json": b"{}"})
    fileio.write_bytes(tmp_path / "x.h", b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite", "report.json", "x.h"]
    assert fileio._temp_prefix("report.json") == f".report.json.{os.getpid()}."
    # a temp name as mkstemp makes it matches edgekit's pattern (so a killed run's file is found later)
    assert fileio._TEMP_NAME.match(f".report.json.{os.getpid()}.ab_12cd3.tmp").group("pid") == str(os.getpid())


def test_stale_temps_of_a_killed_run_are_removed_by_the_next_write(tmp_path):
    dead = _dead_pid()
    legacy = _make(tmp_path, ".report.json.k2x9_a0b.tmp", age_s=fileio.STALE_ANY_S + 60)   # no pid, old
    killed = _make(tmp_path, f".model.tflite.{dead}.q1w2e3r4.tmp", age_s=fileio.STALE_DEAD_WRITER_S + 5)
    fileio.write_group(tmp_path, {"model.tflite": b"new", "report.json": b"{}"})
    assert not legacy.exists() and not killed.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite", "report.json"]


def test_atomic_single_file_writes_clean_too(tmp_path):
    killed = _make(tmp_path, f".model.h.{_dead_pid()}.abcdefgh.tmp", age_s=fileio.STALE_DEAD_WRITER_S + 5)
    fileio.write_text(tmp_path / "model.h", "// new\n")
    assert not killed.exists() and (tmp_path / "model.h").read_text() == "// new\n"


def test_a_concurrent_writers_and_other_files_are_kept(tmp_path):
    """Two edgekit runs in one folder never delete each other's temp files; other files are not ours."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        keep = [
            # a live writer (another edgekit run right now), even when its file is a little old
            _make(tmp_path, f".report.json.{live.pid}.abcdefgh.tmp", age_s=fileio.STALE_DEAD_WRITER_S + 5),
            # a dead pid but just written: might be a writer on another machine sharing the folder
            _make(tmp_path, f".report.json.{_dead_pid()}.abcdefgh.tmp", age_s=1),
            # no pid (older edgekit) and recent
            _make(tmp_path, ".model.tflite.abcdefgh.tmp", age_s=60),
            # not edgekit's naming, however old
            _make(tmp_path, "notes.tmp", age_s=10 * fileio.STALE_ANY_S),
            _make(tmp_path, ".report.json.tmp", age_s=10 * fileio.STALE_ANY_S),
            _make(tmp_path, ".hidden.ABCDEFGH.tmp", age_s=10 * fileio.STALE_ANY_S),
            _make(tmp_path, "model.tflite.abcdefgh.tmp", age_s=10 * fileio.STALE_ANY_S),
        ]
        (tmp_path / ".sub.abcdefgh.tmp").mkdir()          # a folder of that name is not a temp file
        os.utime(tmp_path / ".sub.abcdefgh.tmp", (0, 0))
        assert fileio.clean_stale_temps(tmp_path) == []
        fileio.write_group(tmp_path, {"model.tflite": b"m"})
        assert all(p.exists() for p in keep)
        assert (tmp_path / ".sub.abcdefgh.tmp").is_dir()
    finally:
        live.kill()
        live.wait()


def test_cleaning_never_fails_a_write(tmp_path):
    assert fileio.clean_stale_temps(tmp_path / "missing") == []


def test_check_output_dir_creates_nothing(tmp_path):
    out = tmp_path / "a" / "b"
    assert fileio.check_output_dir(out) == out
    assert not (tmp_path / "a").exists()


def test_output_path_under_a_regular_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder") as err:
        fileio.check_output_dir(f / "sub" / "out")
    assert err.value.exit_code == 11
    with pytest.raises(OutputError, match="exists and is not a folder"):
        fileio.check_output_dir(f)


def test_output_folder_without_write_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("SKIPPED AS ROOT: chmod does not stop root from writing; the file-parent test covers "
                    "the check instead")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied") as err:
            fileio.check_output_dir(ro / "out")
        assert err.value.exit_code == 11
        with pytest.raises(OutputError, match="permission denied"):
            fileio.check_output_dir(ro)
    finally:
        ro.chmod(0o700)


def test_convert_checks_out_dir_before_loading_and_creates_none_on_failure(tmp_path, monkeypatch):
    import edgekit.optimize.loading as loading
    from edgekit.conversion.pipeline import convert
    from edgekit.errors import InputFileError

    f = tmp_path / "file"
    f.write_text("x")
    with monkeypatch.context() as m:
        m.setattr(loading, "load_model", lambda *a, **k: pytest.fail("the model was loaded before -o was checked"))
        with pytest.raises(OutputError, match="is a file, not a folder"):
            convert(tmp_path / "model.keras", out_dir=f / "out")
    with pytest.raises(InputFileError, match="not found"):
        convert(tmp_path / "missing.keras", out_dir=tmp_path / "o" / "deep")
    assert not (tmp_path / "o").exists()
