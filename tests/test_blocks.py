"""Block Kit's limits and pieces, shared by every Slack renderer."""

from incident_detector.notify import blocks
from incident_detector.notify.formats import duration, json_number, truncate


def test_message_escapes_the_fallback_and_keeps_to_the_limits():
    many = [{"type": "divider"}] * (blocks.SLACK_MAX_BLOCKS + 5)
    payload = blocks.message(many, "a <b> & " + "x" * blocks.SLACK_FALLBACK_MAX_CHARS)
    assert len(payload["blocks"]) == blocks.SLACK_MAX_BLOCKS
    assert payload["text"].startswith("a &lt;b&gt; &amp; ")
    assert len(payload["text"]) == blocks.SLACK_FALLBACK_MAX_CHARS
    assert payload["text"].endswith("…")


def test_truncate_escaped_never_leaves_half_an_entity():
    assert blocks.truncate_escaped("ab&amp;cd", 5) == "ab…"
    assert blocks.truncate_escaped("short", 10) == "short"


def test_section_counts_the_lines_that_do_not_fit():
    line = "y" * 900
    text = blocks.section("Title", [line] * 5)["text"]["text"]
    assert len(text) <= blocks.SLACK_SECTION_MAX_CHARS
    assert text.endswith("more")


def test_slack_text_reads_a_payload_back():
    payload = blocks.message([blocks.section("Impact", ["• a &lt; b"])], "fallback")
    assert blocks.slack_text(payload) == "Impact\n• a < b"
    assert blocks.slack_text({"text": "x &amp; y"}) == "x & y"


def test_formats():
    assert duration(90) == "1m30s"
    assert json_number(2.0) == 2 and json_number(float("nan")) is None
    assert truncate("abcdef", 4) == "abc…"
