"""The CLI's contract: instant --help (no TensorFlow imported), one-line errors, documented codes."""
import os
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


def test_the_exit_code_table_is_one_table(capsys):
    """edgekit.errors.EXIT_CODES is the table: --help's epilog is made from it and docs/cli.md's table
    has the same codes, each meaning starting with the code's own text."""
    import re
    from pathlib import Path

    from edgekit.cli.main import app
    from edgekit.errors import EXIT_CODE_NAMES

    assert set(EXIT_CODE_NAMES) == set(EXIT_CODES)
    epilog = " ".join(app.info.epilog.split())
    for code, name in EXIT_CODE_NAMES.items():
        assert f"{code} {name}" in epilog
    doc = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    section = doc.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.M))
    assert {int(k) for k in rows} == set(EXIT_CODES)
    for code, meaning in rows.items():
        assert meaning.replace("`", "").startswith(EXIT_CODES[int(code)]), code


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


def test_every_command_has_a_schema_and_every_json_document_carries_it(tmp_path, tiny_models):
    import json

    from typer.main import get_command

    from edgekit import schemas
    from edgekit.cli.main import app, main

    names = set()
    for name, cmd in get_command(app).commands.items():     # a group's commands are "group sub"
        names |= {f"{name} {sub}" for sub in cmd.commands} if hasattr(cmd, "commands") else {name}
    assert names == set(schemas.BY_COMMAND), "a command without a schema name in edgekit.schemas (or the reverse)"
    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_models["int8_cnn_per_tensor"])
    runs = {"boards": ["boards"], "devices": ["devices"], "doctor": ["doctor"], "inspect": ["inspect", str(model)],
            "export": ["export", str(model), "-o", str(tmp_path / "c")],
            "flash": ["flash", str(model), "-b", "nano33ble", "-p", "/dev/null", "--dry-run", "-o", str(tmp_path / "p")]}
    import contextlib
    import io

    for command, argv in runs.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                main([*argv, "--json"])
            except SystemExit as e:
                assert e.code in (0, None), (command, buf.getvalue())
        doc = json.loads(buf.getvalue())
        assert doc["schema"] == schemas.BY_COMMAND[command], command


def test_output_refuses_a_document_with_another_schema():
    import pytest

    from edgekit.cli.output import with_schema

    assert with_schema([1, 2], "edgekit.boards/1", "boards") == {"schema": "edgekit.boards/1", "boards": [1, 2]}
    assert list(with_schema({"a": 1}, "edgekit.inspect/1")) == ["schema", "a"]
    with pytest.raises(ValueError):
        with_schema({"schema": "edgekit.profile/1"}, "edgekit.validate/1")


def test_global_quiet_and_verbose(tmp_path, tiny_models, monkeypatch):
    import json
    import logging

    from edgekit.cli import output

    model = tmp_path / "m.tflite"
    model.write_bytes(tiny_models["int8_cnn_per_tensor"])
    run = lambda *a: subprocess.run([sys.executable, "-m", "edgekit", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=120)
    quiet = run("-q", "inspect", str(model))
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert run("inspect", str(model)).stdout.strip()            # without -q the tables are there
    doc = run("-q", "inspect", str(model), "--json")
    assert json.loads(doc.stdout)["schema"] == "edgekit.inspect/1"   # --json stays
    monkeypatch.delenv("EDGEKIT_VERBOSE", raising=False)
    before = list(logging.getLogger("edgekit.link").handlers)
    try:
        output.set_global(verbose=True)
        assert os.environ["EDGEKIT_VERBOSE"] == "1"
        assert logging.getLogger("edgekit.link").getEffectiveLevel() == logging.INFO
        lines = []
        o = output.Output()
        o.info = lines.append
        o.log_line("$ pio run")
        assert lines == ["$ pio run"]
    finally:
        logging.getLogger("edgekit.link").handlers = before
        logging.getLogger("edgekit.link").setLevel(logging.NOTSET)
        logging.getLogger("edgekit.device").handlers = [h for h in logging.getLogger("edgekit.device").handlers
                                                        if h in before]
        output.set_global()
        monkeypatch.delenv("EDGEKIT_VERBOSE", raising=False)
