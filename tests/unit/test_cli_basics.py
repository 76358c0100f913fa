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
