"""The house plan, checked: each folder imports only from the floors below it, and no two
folders import each other (docs/architecture.md draws the same floors)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "incident_detector"
# Lower number, lower floor. A module may import from its own floor's folder and from below.
FLOORS = {
    "ground": 0,   # config, model, errors, logs, retry, redact, credentials, kubernetes_parts
    "store": 1,    # the memory: schema, migrations, both databases, what each part keeps
    "sources": 2, "judge": 2,   # read the world; decide (pure)
    "notify": 3,   # tell people
    "act": 4,      # change the world, carefully
    "run": 5,      # the loop
    "web": 6, "feed": 6,        # show: the app, the change feed
    "top": 7,      # main, cli, demo: the one wiring place and the commands
}
TOP = {"main", "cli", "demo", "__main__"}
# The simulated cluster (demo, replay, tests) stands beside the house and may use any of it.
BESIDE = {"sim"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def folder(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "ground"
    if (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "top" if parts[1] in TOP else "ground"


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
                target = ".".join(p for p in (base, node.module or "") if p)
                targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            edges[name].update(t for t in targets if t in modules and t != name)
    return edges


def test_every_import_runs_down_the_floors_or_along_one():
    upward = sorted(
        f"{source} -> {target}"
        for source, targets in imports().items() for target in targets
        if folder(source) not in BESIDE and folder(target) not in BESIDE
        and folder(source) != folder(target)
        and FLOORS[folder(target)] > FLOORS[folder(source)])
    assert upward == []


def test_no_two_folders_import_each_other():
    between: dict[str, set[str]] = defaultdict(set)
    for source, targets in imports().items():
        for target in targets:
            if folder(source) != folder(target) and not {folder(source), folder(target)} & BESIDE:
                between[folder(source)].add(folder(target))
    circles = sorted(f"{a} <-> {b}" for a in between for b in between[a]
                     if a < b and a in between.get(b, set()))
    assert circles == []


def test_the_checker_sees_an_upward_import():
    # The check itself can fail: a ground-floor module importing web/ is an upward import.
    assert FLOORS[folder("incident_detector.web.auth")] > FLOORS[folder("incident_detector.config")]
    assert folder("incident_detector.store.db") == "store"
    assert folder("incident_detector.main") == "top"
    assert "incident_detector.store.records" in imports()["incident_detector.run.daemon"]
