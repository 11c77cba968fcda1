"""run.rules_file: the rules file loaded at start and reloaded from disk, ConfigMap-style."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from structlog.testing import capture_logs

from incident_detector.judge.rules import (
    DEFAULT_RULES,
    RulesError,
    Subject,
    classify,
    parse_rules,
)
from incident_detector.model import Priority
from incident_detector.run import rules_file as rules_file_module
from incident_detector.run.rules_file import RulesFile

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGMAP = REPO_ROOT / "k8s" / "base" / "rules-configmap.yaml"

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

NPE_P2 = """\
rules:
  - name: payment-npe
    match: {log_pattern: "NullPointerException at PaymentService"}
    priority: P2
    remediation: {action: none}
"""
# Same length as NPE_P2, other priority: a same-size edit.
NPE_P4 = NPE_P2.replace("P2", "P4")
TWO_RULES = NPE_P2 + """\
  - name: checkout-alerts
    match: {alertname: [CheckoutDown, CheckoutSlow]}
    priority: P1
    remediation: {action: rollback, cooldown: 1h}
"""
BAD_PRIORITY = NPE_P2.replace("P2", "P7")
BAD_POD_REASON = NPE_P2.replace('{log_pattern: "NullPointerException at PaymentService"}',
                                "{pod_reason: CrashLoop}")
NPE = "NullPointerException at PaymentService.charge"


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def write(path: Path, text: str) -> None:
    path.write_text(text)


def events(logs: list[dict], name: str) -> list[dict]:
    return [entry for entry in logs if entry["event"] == name]


def priority_of_npe(rules_file: RulesFile) -> Priority:
    return classify(rules_file.rules, Subject(log_lines=(NPE,))).priority


# --- start -----------------------------------------------------------------------------------


def test_no_path_is_the_built_in_set() -> None:
    clock = Clock()
    with capture_logs() as logs:
        rules_file = RulesFile(None, clock=clock)
    assert rules_file.rules is DEFAULT_RULES
    assert rules_file.reload_if_changed() is False
    assert rules_file.status() == {
        "source": "built-in", "rule_count": len(DEFAULT_RULES.rules), "include_defaults": False,
        "loaded_at": "2030-01-01T12:00:00Z", "last_reload_error": None}
    assert events(logs, "rules.loaded") == [
        {"event": "rules.loaded", "log_level": "info", "source": "built-in",
         "count": len(DEFAULT_RULES.rules), "include_defaults": False}]


def test_a_valid_file_is_loaded_at_start(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, TWO_RULES)
    with capture_logs() as logs:
        rules_file = RulesFile(str(path), clock=Clock())
    assert [rule.name for rule in rules_file.rules.rules] == ["payment-npe", "checkout-alerts"]
    assert rules_file.rules.source == str(path)
    assert priority_of_npe(rules_file) == Priority.P2
    assert rules_file.status() == {
        "source": str(path), "rule_count": 2, "include_defaults": True,
        "loaded_at": "2030-01-01T12:00:00Z", "last_reload_error": None}
    [loaded] = events(logs, "rules.loaded")
    assert (loaded["source"], loaded["count"]) == (str(path), 2)


def test_an_invalid_file_at_start_raises_naming_file_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, BAD_POD_REASON)
    with pytest.raises(RulesError) as caught:
        RulesFile(str(path), clock=Clock())
    error = caught.value
    assert (error.file, error.rule, error.field) == (str(path), "payment-npe", "match.pod_reason")
    assert str(error).startswith(f"invalid rules file {path}, rule 'payment-npe', "
                                 "field match.pod_reason: 'CrashLoop' is not a pod problem")


@pytest.mark.parametrize(("setup", "words"), [
    (lambda path: None, "cannot be read"),
    (lambda path: path.mkdir(), "cannot be read"),
    (lambda path: path.write_bytes(b"rules: []\n\xff\xfe"), "is not UTF-8"),
    (lambda path: path.write_text(""), "mapping"),
])
def test_an_unusable_file_at_start_raises(tmp_path: Path, setup, words: str) -> None:
    path = tmp_path / "rules.yaml"
    setup(path)
    with pytest.raises(RulesError, match=words) as caught:
        RulesFile(str(path), clock=Clock())
    assert caught.value.file == str(path)


# --- reloads of a plain file -----------------------------------------------------------------


def test_an_edit_is_loaded_and_an_unchanged_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    clock = Clock()
    rules_file = RulesFile(str(path), clock=clock)
    with capture_logs() as logs:
        for _ in range(3):
            clock.advance(20)
            assert rules_file.reload_if_changed() is False
        write(path, TWO_RULES)
        reloaded_at = clock.advance(20)
        assert rules_file.reload_if_changed() is True
        assert rules_file.reload_if_changed() is False
    assert len(rules_file.rules.rules) == 2
    assert rules_file.status()["loaded_at"] == reloaded_at.isoformat().replace("+00:00", "Z")
    assert rules_file.status()["rule_count"] == 2
    assert [(entry["source"], entry["count"]) for entry in events(logs, "rules.loaded")] == [
        (str(path), 2)]


def test_a_same_size_edit_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    rules_file = RulesFile(str(path), clock=Clock())
    assert len(NPE_P4) == len(NPE_P2)
    write(path, NPE_P4)
    assert rules_file.reload_if_changed() is True
    assert priority_of_npe(rules_file) == Priority.P4


def test_a_touched_file_with_the_same_content_is_not_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    clock = Clock()
    rules_file = RulesFile(str(path), clock=clock)
    with capture_logs() as logs:
        os.utime(path, ns=(1, 10**18))
        write(path, NPE_P2)  # rewritten: new mtime and ctime, same bytes
        assert rules_file.reload_if_changed() is False
    assert logs == []
    assert rules_file.status()["loaded_at"] == "2030-01-01T12:00:00Z"


def test_a_bad_edit_keeps_the_rules_and_is_logged_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    clock = Clock()
    rules_file = RulesFile(str(path), clock=clock)
    with capture_logs() as logs:
        write(path, BAD_POD_REASON)
        for _ in range(5):
            clock.advance(20)
            assert rules_file.reload_if_changed() is False
        # The same bad bytes written again (a ConfigMap re-sync, a touch): still said once.
        write(path, BAD_POD_REASON)
        os.utime(path)
        assert rules_file.reload_if_changed() is False
    assert priority_of_npe(rules_file) == Priority.P2
    assert [(entry["file"], entry["rule"], entry["field"], entry["log_level"])
            for entry in events(logs, "rules.reload_failed")] == [
        (str(path), "payment-npe", "match.pod_reason", "warning")]
    [failed] = events(logs, "rules.reload_failed")
    assert "'CrashLoop' is not a pod problem" in failed["reason"]
    assert events(logs, "rules.loaded") == []
    status = rules_file.status()
    assert status["loaded_at"] == "2030-01-01T12:00:00Z" and status["rule_count"] == 1
    assert status["last_reload_error"].startswith(
        f"invalid rules file {path}, rule 'payment-npe', field match.pod_reason:")


def test_another_bad_edit_is_logged_again_and_a_fix_clears_the_error(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    rules_file = RulesFile(str(path), clock=Clock())
    with capture_logs() as logs:
        write(path, BAD_POD_REASON)
        assert rules_file.reload_if_changed() is False
        write(path, BAD_PRIORITY)
        assert rules_file.reload_if_changed() is False
        assert rules_file.reload_if_changed() is False
        assert rules_file.status()["last_reload_error"].endswith("found 'P7'")
        write(path, TWO_RULES)
        assert rules_file.reload_if_changed() is True
    assert [entry["field"] for entry in events(logs, "rules.reload_failed")] == [
        "match.pod_reason", "priority"]
    assert rules_file.status()["last_reload_error"] is None
    assert len(rules_file.rules.rules) == 2


def test_a_bad_edit_reverted_clears_the_error_without_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    rules_file = RulesFile(str(path), clock=Clock())
    write(path, "rules: [\n")
    assert rules_file.reload_if_changed() is False
    assert "line 2" in rules_file.status()["last_reload_error"]
    write(path, NPE_P2)
    assert rules_file.reload_if_changed() is False
    assert rules_file.status()["last_reload_error"] is None
    # The same bad content later is a new failure, said again.
    with capture_logs() as logs:
        write(path, "rules: [\n")
        rules_file.reload_if_changed()
    assert len(events(logs, "rules.reload_failed")) == 1


def test_a_file_that_disappears_keeps_the_rules_and_says_so_once(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    rules_file = RulesFile(str(path), clock=Clock())
    with capture_logs() as logs:
        path.unlink()
        for _ in range(3):
            assert rules_file.reload_if_changed() is False
    assert priority_of_npe(rules_file) == Priority.P2
    [failed] = events(logs, "rules.reload_failed")
    assert failed["file"] == str(path) and failed["rule"] is None and failed["field"] is None
    assert "cannot be read" in failed["reason"] and "previous rules stay" in failed["reason"]
    assert "cannot be read" in rules_file.status()["last_reload_error"]
    # Back with the same content: nothing to load, the error is gone.
    write(path, NPE_P2)
    assert rules_file.reload_if_changed() is False
    assert rules_file.status()["last_reload_error"] is None
    # Gone and back with new content: loaded.
    path.unlink()
    assert rules_file.reload_if_changed() is False
    write(path, NPE_P4)
    assert rules_file.reload_if_changed() is True
    assert priority_of_npe(rules_file) == Priority.P4


def test_a_file_replaced_by_a_directory_is_a_failure_not_an_exception(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    rules_file = RulesFile(str(path), clock=Clock())
    path.unlink()
    path.mkdir()
    with capture_logs() as logs:
        assert rules_file.reload_if_changed() is False
        assert rules_file.reload_if_changed() is False
    assert len(events(logs, "rules.reload_failed")) == 1
    assert "cannot be read" in rules_file.status()["last_reload_error"]


def test_a_non_utf8_edit_keeps_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    rules_file = RulesFile(str(path), clock=Clock())
    path.write_bytes(b"rules: []\n# \xff\n")
    assert rules_file.reload_if_changed() is False
    assert "UTF-8" in rules_file.status()["last_reload_error"]
    assert priority_of_npe(rules_file) == Priority.P2


# --- the stat shortcut and its racy window ---------------------------------------------------


class FrozenStat:
    """Makes every stat of the file look the same, as a rewrite within one timestamp tick can."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, modified_at: datetime) -> None:
        nanoseconds = int(modified_at.timestamp() * 1e9)
        stat = rules_file_module._Stat(device=1, inode=2, size=3, mtime_ns=nanoseconds,
                                       ctime_ns=nanoseconds)
        self.calls = 0

        def of(path: str) -> rules_file_module._Stat:
            self.calls += 1
            return stat

        monkeypatch.setattr(rules_file_module._Stat, "of", staticmethod(of))


def test_an_unchanged_settled_stat_skips_reading(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    FrozenStat(monkeypatch, START - timedelta(minutes=5))
    rules_file = RulesFile(str(path), clock=Clock())
    write(path, NPE_P4)
    # The stat says nothing changed and it was taken well after the last write: not read.
    assert rules_file.reload_if_changed() is False
    assert priority_of_npe(rules_file) == Priority.P2


def test_a_stat_inside_the_racy_window_is_checked_by_content(tmp_path: Path,
                                                             monkeypatch) -> None:
    path = tmp_path / "rules.yaml"
    write(path, NPE_P2)
    clock = Clock()
    FrozenStat(monkeypatch, START - timedelta(seconds=1))
    rules_file = RulesFile(str(path), clock=clock)
    write(path, NPE_P4)  # within the same timestamp tick: the stat cannot tell
    assert rules_file.reload_if_changed() is True
    assert priority_of_npe(rules_file) == Priority.P4
    # Past the window, one more read confirms the content; from then on the stat is trusted.
    clock.advance(10)
    assert rules_file.reload_if_changed() is False
    write(path, NPE_P2)
    assert rules_file.reload_if_changed() is False
    assert priority_of_npe(rules_file) == Priority.P4


# --- the ConfigMap volume, updated the way the kubelet does it ------------------------------


class ConfigMapVolume:
    """A directory laid out like a ConfigMap volume and updated like the kubelet's AtomicWriter:

    ``..2030_01_01_12_00_00.000000001/rules.yaml`` holds the data, ``..data`` is a symlink to that
    directory, and ``rules.yaml`` a symlink to ``..data/rules.yaml``. An update writes a new
    timestamped directory, points a temporary symlink at it, renames that over ``..data``
    (os.replace: atomic) and removes the old directory.
    """

    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        self.generation = 0
        root.mkdir()
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, str]) -> None:
        self.generation += 1
        data = self.root / f"..2030_01_01_12_00_00.{self.generation:09d}"
        data.mkdir()
        for name, text in files.items():
            (data / name).write_text(text)
        old = (self.root / "..data").resolve() if (self.root / "..data").exists() else None
        temporary = self.root / "..data_tmp"
        temporary.symlink_to(data.name)
        os.replace(temporary, self.root / "..data")
        if old is not None:
            for child in old.iterdir():
                child.unlink()
            old.rmdir()

    @property
    def path(self) -> Path:
        return self.root / "rules.yaml"


def test_configmap_update_by_symlink_swap_is_loaded(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", {"rules.yaml": NPE_P2})
    clock = Clock()
    rules_file = RulesFile(str(volume.path), clock=clock)
    assert volume.path.is_symlink() and (volume.root / "..data").is_symlink()
    assert priority_of_npe(rules_file) == Priority.P2
    assert rules_file.reload_if_changed() is False
    with capture_logs() as logs:
        volume.update({"rules.yaml": TWO_RULES})
        clock.advance(60)
        assert rules_file.reload_if_changed() is True
        assert rules_file.reload_if_changed() is False
    assert [rule.name for rule in rules_file.rules.rules] == ["payment-npe", "checkout-alerts"]
    assert rules_file.rules.source == str(volume.path)
    assert [entry["source"] for entry in events(logs, "rules.loaded")] == [str(volume.path)]


def test_configmap_swap_with_an_old_mtime_and_the_same_size_is_still_loaded(
        tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", {"rules.yaml": NPE_P2})
    before = os.stat(volume.path)
    rules_file = RulesFile(str(volume.path), clock=Clock())
    volume.update({"rules.yaml": NPE_P4})
    # The new file even carries the old file's times: only its identity and content differ.
    os.utime(volume.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(volume.path).st_mtime_ns == before.st_mtime_ns
    assert os.stat(volume.path).st_size == before.st_size
    assert rules_file.reload_if_changed() is True
    assert priority_of_npe(rules_file) == Priority.P4


def test_configmap_swap_with_the_same_content_is_no_reload(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", {"rules.yaml": NPE_P2})
    rules_file = RulesFile(str(volume.path), clock=Clock())
    with capture_logs() as logs:
        volume.update({"rules.yaml": NPE_P2})
        assert rules_file.reload_if_changed() is False
    assert logs == []


def test_configmap_swap_to_a_bad_file_keeps_the_rules_then_a_fix_loads(tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "rules", {"rules.yaml": NPE_P2})
    rules_file = RulesFile(str(volume.path), clock=Clock())
    with capture_logs() as logs:
        volume.update({"rules.yaml": BAD_PRIORITY})
        for _ in range(3):
            assert rules_file.reload_if_changed() is False
        volume.update({"rules.yaml": BAD_PRIORITY})  # re-synced, same bad bytes
        assert rules_file.reload_if_changed() is False
        assert priority_of_npe(rules_file) == Priority.P2
        volume.update({"rules.yaml": NPE_P4})
        assert rules_file.reload_if_changed() is True
    [failed] = events(logs, "rules.reload_failed")
    assert (failed["file"], failed["rule"], failed["field"]) == (
        str(volume.path), "payment-npe", "priority")
    assert priority_of_npe(rules_file) == Priority.P4
    assert rules_file.status()["last_reload_error"] is None


# --- the shipped ConfigMap -------------------------------------------------------------------


def test_the_shipped_configmap_holds_valid_rules_that_change_nothing() -> None:
    [configmap] = [doc for doc in yaml.safe_load_all(CONFIGMAP.read_text()) if doc]
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"]["name"] == "incident-detector-rules"
    assert set(configmap["data"]) == {"rules.yaml"}
    parsed = parse_rules(configmap["data"]["rules.yaml"], source="rules.yaml")
    [example] = parsed.rules
    assert example.name == "payment-npe" and example.priority == Priority.P2
    assert example.remediation.action == "none"
    # Shipped disabled: installing the detector does not change how anything is classified.
    assert example.enabled is False and parsed.include_defaults is True
    for subject in (Subject(log_lines=(NPE,), signals=("error_spike",)),
                    Subject(pod_reasons=("CrashLoopBackOff",)), Subject()):
        assert classify(parsed, subject).rule == classify(DEFAULT_RULES, subject).rule
