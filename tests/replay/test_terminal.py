"""Replay's terminal rendering of card Markdown: readable text, wrapped, colour only on a terminal."""

from cds_service import terminal


def test_markdown_marks_links_and_entities_become_plain_text():
    line = "**Usually not appropriate** for PSA &gt; 10 ng/mL: see [the rule](https://x.test/r) and `code`"
    assert terminal.plain(line) == (
        "Usually not appropriate for PSA > 10 ng/mL: see the rule <https://x.test/r> and code"
    )


def test_a_star_that_is_not_emphasis_is_kept():
    assert terminal.plain("PSA 2 * baseline, grade group 4 * 2") == "PSA 2 * baseline, grade group 4 * 2"


def test_details_wrap_with_hanging_bullets_and_single_blank_lines():
    detail = "**Facts**\n\n\n- " + "word " * 30 + "\n- short\n\n"
    lines = terminal.detail_lines(detail, width=40)
    assert lines[0] == "    Facts" and lines[1] == ""
    bullet = [ln for ln in lines if ln.startswith("    - word")]
    assert bullet and all(len(ln) <= 40 for ln in lines)
    continuation = lines[lines.index(bullet[0]) + 1]
    assert continuation.startswith("      word")  # hangs under the bullet's text
    assert lines[-1] == "    - short" and "" not in lines[2:]


def test_indicator_is_coloured_only_for_a_terminal():
    assert terminal.indicator("WARNING", colour=False) == "[WARNING]"
    coloured = terminal.indicator("CRITICAL", colour=True)
    assert coloured.startswith("\033[") and "[CRITICAL]" in coloured and coloured.endswith("\033[0m")
