from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cli.main import _register_subcommands, app

_register_subcommands()
runner = CliRunner()


def test_unknown_device_is_refused_by_name() -> None:
    result = runner.invoke(app, ["challenge", "--device", "tpu"])
    assert result.exit_code == 2 and "tpu" in result.output


def test_missing_teacher_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["challenge", "--device", "cpu", "--teacher", str(tmp_path / "nowhere")])
    output = result.output.replace("\n", "")  # rich wraps long paths
    assert result.exit_code == 2 and f"{tmp_path / 'nowhere'}: no config.json" in output


def test_dashboard_build_writes_the_page(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dashboard", "build", "--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out/index.html").is_file() and "none yet" in (tmp_path / "out/index.html").read_text()
