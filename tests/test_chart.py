"""web.chart: the error-rate SVG is well-formed, accessible and never breaks on odd input."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from incident_detector.run.live import SeriesPoint
from incident_detector.web.chart import describe, error_rate_svg

UTC = timezone.utc
T0 = datetime(2026, 11, 23, 18, 1, tzinfo=UTC)
NS = "{http://www.w3.org/2000/svg}"


def svg(points, **kw):
    args = dict(baseline_per_minute=1.0, band_upper=2.0, threshold_per_minute=2.5,
                rollout_at=T0, width=320, height=90, title="payments-api rev 2")
    args.update(kw)
    text = error_rate_svg(points, **args)
    return text, ET.fromstring(text)


def tags(root, name):
    return root.findall(f".//{NS}{name}")


def test_a_rollout_with_points_draws_band_lines_marker_and_rate():
    points = [SeriesPoint(T0 + timedelta(seconds=20 * i), v) for i, v in enumerate([0, 3, 8])]
    text, root = svg(points)
    assert root.get("role") == "img"
    label = root.get("aria-label")
    assert label == root.find(f"{NS}title").text
    assert "now 8 errors per minute" in label and "peak 8" in label
    assert "baseline 1 per minute" in label and "threshold 2.5 per minute" in label
    assert "rollout at 18:01:00 UTC" in label
    classes = [el.get("class") for el in root.iter()]
    for cls in ("band", "baseline", "threshold", "rollout", "rate", "now"):
        assert cls in classes, cls
    (line,) = tags(root, "polyline")
    assert len(line.get("points").split()) == 3
    # Words next to the lines, not colour alone.
    words = [t.text for t in tags(root, "text")]
    assert "threshold" in words and "baseline" in words and any(w.startswith("rollout") for w in words)


def test_no_point_says_so():
    _, root = svg([])
    assert "no error rate measured yet" in root.get("aria-label")
    assert [t.text for t in tags(root, "text") if "empty" in (t.get("class") or "")] == ["no data yet"]
    assert not tags(root, "polyline")


def test_one_point_is_a_dot():
    _, root = svg([(T0, 4.0)])
    assert not tags(root, "polyline")
    assert [c.get("class") for c in tags(root, "circle")] == ["rate", "now"]


def test_none_points_break_the_line():
    points = [(T0 + timedelta(seconds=20 * i), v) for i, v in
              enumerate([1.0, 2.0, None, 3.0, 4.0, None, 5.0])]
    _, root = svg(points)
    assert len(tags(root, "polyline")) == 2
    assert "over 5 readings" in root.get("aria-label")


def test_huge_and_odd_values_stay_inside_the_plot():
    points = [(T0, 1e308), (T0 + timedelta(seconds=10), 2e307),
              (T0 + timedelta(seconds=20), math.inf), (T0 + timedelta(seconds=40), math.nan),
              (T0 + timedelta(seconds=60), -5.0), (T0 + timedelta(seconds=80), "x")]
    text, root = svg(points, baseline_per_minute=math.inf, threshold_per_minute=1e308)
    assert "nan" not in text and "inf" not in text
    (line,) = tags(root, "polyline")
    for pair in line.get("points").split():
        x, y = map(float, pair.split(","))
        assert 0 <= x <= 320 and 0 <= y <= 90
    assert len(tags(root, "circle")) == 2  # -5 drawn as 0 on its own, and the last point


def test_text_is_escaped():
    text, root = svg([(T0, 1.0)], title='<script>alert("x")</script> & co')
    assert "<script>" not in text
    assert root.find(f"{NS}title").text.startswith('<script>alert("x")</script> & co:')


def test_naive_times_and_no_rollout():
    naive = datetime(2026, 11, 23, 18, 0)
    _, root = svg([(naive, 1.0), (naive + timedelta(minutes=1), 2.0)], rollout_at=None,
                  baseline_per_minute=None, band_upper=None, threshold_per_minute=None)
    classes = [el.get("class") for el in root.iter()]
    assert "rollout" not in classes and "band" not in classes
    assert "baseline unknown" in root.get("aria-label")


def test_all_points_at_one_instant():
    _, root = svg([(T0, 1.0), (T0, 2.0)], rollout_at=T0)
    assert tags(root, "polyline")


def test_describe_reads_well():
    assert describe([(T0, 0.5)], baseline_per_minute=0.25, threshold_per_minute=2.5,
                     rollout_at=None, title="x") == \
        "x: now 0.5 errors per minute, peak 0.5 over 1 reading; baseline 0.25 per minute; " \
        "threshold 2.5 per minute."


values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(min_value=-10**30, max_value=10**30))
times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.just(UTC))


@settings(max_examples=200, deadline=None)
@given(points=st.lists(st.tuples(times, values), max_size=40),
       baseline=values, upper=values, threshold=values,
       rollout=st.one_of(st.none(), times),
       width=st.integers(min_value=-5, max_value=2000),
       height=st.integers(min_value=-5, max_value=800),
       title=st.text(max_size=30))
def test_any_input_is_well_formed_svg_inside_its_box(points, baseline, upper, threshold, rollout,
                                                     width, height, title):
    text = error_rate_svg(points, baseline_per_minute=baseline, band_upper=upper,
                          threshold_per_minute=threshold, rollout_at=rollout, width=width,
                          height=height, title=title)
    root = ET.fromstring(text)
    assert root.get("role") == "img" and root.get("aria-label")
    w, h = float(root.get("width")), float(root.get("height"))
    for el in root.iter():
        for attr in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy"):
            if el.get(attr) is not None:
                assert -1 <= float(el.get(attr)) <= max(w, h) + 1
        if el.get("points"):
            for pair in el.get("points").split():
                px, py = map(float, pair.split(","))
                assert 0 <= px <= w and 0 <= py <= h
