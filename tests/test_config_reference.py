"""docs/configuration.md is what incident_detector.config_reference writes from ``Settings``, and
every setting has a description there (and every description a setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from incident_detector import config_reference
from incident_detector.config import Settings

ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = ROOT / "docs" / "configuration.md"


def test_every_setting_has_a_description_and_every_description_a_setting() -> None:
    assert config_reference.drift() == []


def test_drift_names_what_is_missing_on_either_side() -> None:
    fields = dict(Settings.model_fields)
    fields["brand_new_knob"] = fields.pop("log_level")
    problems = config_reference.drift(fields)
    assert any("BRAND_NEW_KNOB" in line and "no description" in line for line in problems)
    assert any("log_level" in line and "Settings does not have" in line for line in problems)
    with pytest.raises(ValueError, match="BRAND_NEW_KNOB"):
        config_reference.render(fields)


def test_the_committed_configuration_reference_is_what_the_generator_writes() -> None:
    expected = config_reference.render()
    committed = CONFIGURATION.read_text(encoding="utf-8") if CONFIGURATION.exists() else ""
    assert committed == expected, (
        f"{CONFIGURATION.relative_to(ROOT)} differs from what Settings gives: run "
        f"`{config_reference.REGENERATE_COMMAND}` (or python -m incident_detector.config_reference, "
        f"from the repository's root) and commit the result")


def test_the_reference_lists_every_variable_with_its_default() -> None:
    page = config_reference.render()
    for name, field in Settings.model_fields.items():
        row = next(line for line in page.splitlines()
                   if line.startswith(f"| `{config_reference.env_name(name, field)}` |"))
        assert config_reference.render_default(field).replace("|", "\\|") in row
    assert "| `LOKI_URL` | *(required)* |" in page
    assert "| `ERROR_PATTERN` | `(?i)(error\\|exception\\|fatal\\|panic)` |" in page
    assert "| `SLACK_WEBHOOK_URL` | *(unset)* | a URL; **a secret** |" in page
    assert "| `ERROR_MATCH` | `auto` | `auto`, `level` or `pattern` |" in page
    assert "| `ERROR_WINDOW_SECONDS` | `120` | an integer, 10 to 86400 |" in page


def test_the_generator_writes_the_page_where_it_is_told(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "configuration.md"
    assert config_reference.main(["--output", str(output)]) == 0
    assert output.read_text(encoding="utf-8") == config_reference.render()
    assert config_reference.main(["--output", "-"]) == 0
    assert capsys.readouterr().out == config_reference.render()


def test_by_default_it_writes_docs_configuration_md_under_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        config_reference.main([])
    assert stopped.value.code == 2
    assert "run it from the repository's root" in capsys.readouterr().err
    (tmp_path / "docs").mkdir()
    assert config_reference.main([]) == 0
    assert (tmp_path / "docs" / "configuration.md").read_text(encoding="utf-8") == \
        config_reference.render()
