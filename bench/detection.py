"""Precision, recall and detection delay of the detector over the scenario suite.

Each scenario is replayed through the real detector (see ``incident_detector.sim.replay``). A
notified revision that the scenario expects is a true positive; one it does not expect is a false
positive; an expected one never notified is a false negative. Change incidents count the same
way, each known by its workload and its first cause (``checkout<-Deployment/payments``): found
and expected is a true positive (even when its action is not the expected one; the scenario
tests check that), notified and not expected a false positive. The delay runs from the moment
the scenario's evidence is in Loki (``evidence_at``) to the notification.

    python -m bench.detection [SCENARIO_DIR]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from incident_detector.logs import configure_logging
from incident_detector.sim.replay import change_key, incident_key, replay
from incident_detector.sim.scenario import Scenario, load_scenario, scenario_paths

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "tests" / "scenarios"


def run(directory: Path = DEFAULT_DIR) -> dict:
    configure_logging(level="error", fmt="json", stream=sys.stderr)
    tp = fp = fn = 0
    delays: list[float] = []
    rows = []
    started = time.perf_counter()
    for path in scenario_paths(directory):
        scenario = load_scenario(path)
        result = asyncio.run(replay(scenario))
        expected: dict[tuple[str, ...], Any] = {
            (e.deployment or scenario.deployment, str(e.revision)): e
            for e in scenario.expect.incidents}
        expected.update({(e.deployment, e.cause.kind, e.cause.name): e
                         for e in scenario.expect.change_incidents})
        notified: dict[tuple[str, ...], Any] = {
            (deployment, str(revision)): n for n in result.notifications
            for deployment, revision in [incident_key(scenario, n)]}
        notified.update({change_key(n): n for n in result.change_notifications})
        hits = sorted(set(expected) & set(notified))
        tp += len(hits)
        fp += len(set(notified) - set(expected))
        fn += len(set(expected) - set(notified))
        for key in hits:
            if expected[key].evidence_at is not None:
                delays.append(notified[key].at_seconds - expected[key].evidence_at)
        rows.append((path.stem, _labels(scenario, expected), _labels(scenario, notified)))
    elapsed = time.perf_counter() - started
    return {"scenarios": len(rows), "rows": rows, "tp": tp, "fp": fp, "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else 1.0,
            "recall": tp / (tp + fn) if tp + fn else 1.0,
            "delays": delays, "elapsed": elapsed}


def _labels(scenario: Scenario, keys: Any) -> list[str]:
    """Short names of incidents: "2" (the primary Deployment's revision 2), "payments#2",
    "checkout<-ConfigMap/orders-config" (a change incident and its first cause)."""
    labels = []
    for key in sorted(keys):
        if len(key) == 3:
            labels.append(f"{key[0]}<-{key[1]}/{key[2]}")
        elif key[0] == scenario.deployment:
            labels.append(key[1])
        else:
            labels.append(f"{key[0]}#{key[1]}")
    return labels


def report(figures: dict) -> str:
    shown = [(name, ", ".join(expected) or "-", ", ".join(notified) or "-",
              "" if expected == notified else "   <-- differs")
             for name, expected, notified in figures["rows"]]
    width = max([10] + [len(text) for row in shown for text in row[1:3]])
    lines = [f"{'scenario':45} {'expected':>{width}} {'notified':>{width}}"]
    for name, expected, notified, mark in shown:
        lines.append(f"{name:45} {expected:>{width}} {notified:>{width}}{mark}")
    delays = sorted(figures["delays"])
    lines.append("")
    lines.append(f"scenarios: {figures['scenarios']}  true positives: {figures['tp']}  "
                 f"false positives: {figures['fp']}  false negatives: {figures['fn']}")
    lines.append(f"precision: {figures['precision']:.3f}  recall: {figures['recall']:.3f}")
    if delays:
        p90 = delays[min(len(delays) - 1, int(round(0.9 * (len(delays) - 1))))]
        lines.append(f"detection delay (evidence in Loki -> notification, simulated seconds, "
                     f"poll interval 20 s): median {statistics.median(delays):.1f}  "
                     f"p90 {p90:.1f}  max {max(delays):.1f}  (n={len(delays)})")
    lines.append(f"replayed in {figures['elapsed']:.1f} s of wall time")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    directory = Path(argv[0]) if argv else DEFAULT_DIR
    print(report(run(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
