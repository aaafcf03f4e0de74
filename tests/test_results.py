"""scripts.results without training: thresholds, the table and the chart (the real runs: test_use_cases.py)."""
import pytest

from scripts import results


def scores(metric, value, **extra):
    return {metric: value, "items": [], **extra}


def test_thresholds_follow_each_use_case_rule():
    assert results.compare("rpg", scores("exact_match", 0.0), scores("exact_match", 0.85))["pass"]
    assert not results.compare("rpg", scores("exact_match", 0.0), scores("exact_match", 0.79))["pass"]
    assert results.compare("qa", scores("keyword_recall", 0.0), scores("keyword_recall", 0.8))["pass"]
    base = scores("break_rate", 0.4, in_character=0.2)
    assert results.compare("character", base, scores("break_rate", 0.2, in_character=0.9))["pass"]
    assert not results.compare("character", base, scores("break_rate", 0.21, in_character=0.9))["pass"]
    never = scores("break_rate", 0.0, in_character=0.2)  # a base that never breaks leaves nothing to halve
    assert not results.compare("character", never, scores("break_rate", 0.0, in_character=0.9))["pass"]


def test_table_and_chart(tmp_path):
    rows = [results.compare("rpg", scores("exact_match", 0.0), scores("exact_match", 0.85), 250.0),
            results.compare("character", scores("break_rate", 0.47, in_character=0.27),
                            scores("break_rate", 0.07, in_character=0.87), 140.0)]
    text = results.markdown(rows, "test machine")
    assert "| rpg | `recipes/tinyllama-rpg/lora-135m.yml` | exact_match | 0.000 | 0.850 | tuned >= 0.8 | yes | 250 |" in text
    assert "| character |" in text and "tuned <= base / 2 (base > 0) | yes |" in text
    assert "base 0.270, tuned 0.870" in text
    results.chart(rows, tmp_path / "results.png")
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_refuses_to_overwrite_without_force(tmp_path):
    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(FileExistsError, match="--force"):
        results.run(tmp_path, ["rpg"])


def test_in_character_needs_mira_s_world():
    assert results.in_character("The tide is high and the lamp is lit.")
    assert not results.in_character("Here is a Python function that sorts a list.")
    assert not results.in_character("A research pattern.") and results.in_character("Two ships passed.")
    assert results.has_word("It is 0 degrees.", "0") and not results.has_word("It is 100 degrees.", "0")
    assert not results.has_word("See you Sunday.", "Sun") and results.has_word("The Sun is a star.", "sun")


def test_retention_table():
    ret = lambda ppl, answers: {"ppl": ppl, "answers": answers}  # noqa: E731
    row = results.compare("rpg", {**scores("exact_match", 0.0), "retention": ret(10.0, 0.9)},
                          {**scores("exact_match", 0.9), "retention": ret(12.0, 0.8)})
    assert row["retention"]["ppl_change"] == pytest.approx(0.2)
    assert "| rpg | 10.00 | 12.00 | +20.0% | NO | 0.90 | 0.80 |" in results.markdown([row], "m")
