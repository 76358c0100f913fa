"""The CLI's contract: instant --help (no TensorFlow imported), one-line errors, documented codes."""
import subprocess
import sys

from edgekit.errors import EXIT_CODES, EdgekitError


def _run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=120,
                          env=env)


def test_help_does_not_import_tensorflow():
    code = ("import sys; from edgekit.cli.main import app; "
            "heavy=[m for m in ('tensorflow','tf_keras','tensorflow_model_optimization','ai_edge_litert',"
            "'tflite_micro','keras') if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == ""


def test_help_lists_convert():
    r = _run("--help")
    assert r.returncode == 0 and "convert" in r.stdout


def test_version():
    from edgekit import __version__

    r = _run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"edgekit {__version__}"


def test_every_error_class_has_a_documented_exit_code():
    import edgekit.errors as errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, EdgekitError)]
    assert classes
    for c in classes:
        assert c.exit_code in EXIT_CODES, c.__name__


def test_a_json_command_that_fails_prints_an_error_document(tmp_path):
    """With --json, an error is one JSON document on stdout as well as the line on stderr."""
    import json

    out = subprocess.run([sys.executable, "-m", "edgekit", "inspect", str(tmp_path / "missing.tflite"), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    doc = json.loads(out.stdout)
    assert doc["schema"] == "edgekit.error/1" and doc["code"] == 3 and doc["error"] == "InputFileError"
    assert "missing.tflite" in doc["message"] and out.stderr.startswith("edgekit: error: ")


def test_a_failure_after_the_json_result_prints_no_second_document(monkeypatch, capsys, tmp_path):
    """validate --json that fails (exit 10) has printed its result: the error adds no second document."""
    import json

    import pytest

    from edgekit import validation
    from edgekit.cli import main as cli_main, output

    failed = validation.ValidationResult(model="m", board="virtual", samples=1, agreement=0.0, agreement_tflm=0.0,
                                         max_lsb=9, max_lsb_tflm=9, max_abs_diff=9.0, max_lsb_limit=1,
                                         min_agreement=0.99, passed=False, failures=["outputs differ by up to 9 LSBs"])
    monkeypatch.setattr(validation, "validate", lambda *a, **kw: failed)
    monkeypatch.setattr(output, "json_document_written", False)
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["validate", str(tmp_path / "m.tflite"), "--data", str(tmp_path / "d.npz"), "--json"])
    assert exc.value.code == 10
    doc = json.loads(capsys.readouterr().out)          # exactly one document: the result
    assert doc["schema"] == "edgekit.validate/1" and doc["passed"] is False
