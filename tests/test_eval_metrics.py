"""eval.metrics on hand-made cases, eval.report writing, and eval.curves on a hand-made trainer state."""
import json
import math

import pytest

from eval import curves, metrics, report
from eval.metrics import bleu, break_rate, exact_match, keyword_recall, markers_found, rouge_l


# ---------------------------------------------------------------- keyword recall

def test_keyword_recall_whole_words_case_and_punctuation():
    assert keyword_recall("Error E12 indicates that the Water-Tank is EMPTY.", ["water tank", "empty"]) == 1.0
    assert keyword_recall("The tank is full.", ["water tank", "empty"]) == 0.0
    assert keyword_recall("It holds 1.8 liters.", ["1.8 liters", "water tank"]) == 0.5
    assert keyword_recall("The code is e21.", ["E21", "boiler"]) == 0.5
    assert keyword_recall("Don\u2019t descale it.", ["don't"]) == 1.0  # typographic apostrophe


def test_keyword_recall_is_not_substring_matching():
    assert keyword_recall("Three tanks and a tankard.", ["tank"]) == 0.0
    assert keyword_recall("It holds 18 liters.", ["1.8 liters"]) == 0.0
    assert keyword_recall("The pump makes 15 bar of pressure", ["15 bar", "bar", "pump", "pressure washer"]) == 0.75
    assert keyword_recall("water, then tank", ["water tank"]) == 0.0


def test_keyword_recall_needs_keywords():
    with pytest.raises(ValueError):
        keyword_recall("anything", [])


# ---------------------------------------------------------------- ROUGE-L, BLEU, exact match

def test_rouge_l_values():
    assert rouge_l("The cat sat on the mat.", "the cat sat on the mat") == pytest.approx(1.0)
    assert rouge_l("dogs bark loudly", "the cat sat on the mat") == 0.0
    # LCS 3; precision 3/3, recall 3/6 -> F = 2/3
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    # argument order: (prediction, reference) -> precision from the prediction
    assert rouge_l("the cat sat on the mat today again", "the cat sat") == pytest.approx(2 * 1 * (3 / 8) / (1 + 3 / 8))


def test_bleu_values_on_a_0_1_scale():
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert bleu(["xyzzy plugh"], ["the cat sat on the mat"]) == 0.0
    # precisions 6/7, 5/6, 4/5, 3/4, no brevity penalty (prediction longer) -> (3/7) ** (1/4)
    expected = (3 / 7) ** 0.25
    assert bleu(["the cat sat on the mat today"], ["the cat sat on the mat"]) == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError):
        bleu(["a"], ["a", "b"])


def test_exact_match():
    assert exact_match(" HIT \n", "HIT") == 1.0
    assert exact_match("hit", "HIT") == 0.0
    assert exact_match("hit", "HIT", casefold=True) == 1.0
    assert exact_match("HIT!", "HIT") == 0.0
    assert exact_match("3 4", "34") == 0.0


def test_break_rate_and_markers():
    markers = ["as an ai", "i am an ai", "llm", "language model"]
    outputs = ["I am an AI model.", "Arr, I be Vex of the Salty Dice.", "As an   AI, I can't.", "A smallmouth bass!"]
    assert break_rate(outputs, markers) == 0.5
    assert markers_found("As an AI language model, no.", markers) == ["as an ai", "language model"]
    assert markers_found("I said nothing about models", markers) == []
    with pytest.raises(ValueError):
        break_rate([], markers)


def test_metrics_cli_scores_a_report(tmp_path, capsys):
    path = tmp_path / "report.jsonl"
    lines = [{"output": "HIT", "reference": "HIT"}, {"output": "MISS", "reference": "HIT"},
             {"output": "no reference"}]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    summary = metrics.main([str(path)])
    assert summary["n"] == 2 and summary["exact_match"] == 0.5
    assert json.loads(capsys.readouterr().out)["exact_match"] == 0.5


# ---------------------------------------------------------------- report writer

def test_report_markdown_and_no_overwrite(tmp_path):
    rep = report.Report("T").kv({"loss": 1.23456789, "none": None}).table(["a", "b"], [["x|y", "line\nbreak"]])
    rep.figure("loss.png", "loss")
    text = rep.render()
    assert "| x\\|y | line<br>break |" in text and "1.2346" in text and "![loss](loss.png)" in text
    report.write_outputs(tmp_path, {"r.md": text, "r.bin": b"\x00\x01"})
    assert (tmp_path / "r.md").read_text() == text
    with pytest.raises(FileExistsError):
        report.write_outputs(tmp_path, {"new.md": "x", "r.md": "y"})
    assert not (tmp_path / "new.md").exists()  # refused before writing anything
    report.write_outputs(tmp_path, {"r.md": "y"}, force=True)
    assert (tmp_path / "r.md").read_text() == "y"


# ---------------------------------------------------------------- curves

def _state(losses, evals):
    history = [{"epoch": s / 10, "grad_norm": 2.0 / s, "learning_rate": 1e-3 * (1 - s / 20), "loss": v, "step": s}
               for s, v in losses]
    history += [{"epoch": s / 10, "eval_loss": v, "eval_runtime": 1.0, "step": s} for s, v in evals]
    history.sort(key=lambda e: e["step"])
    history.append({"epoch": 2.0, "step": 20, "train_loss": 1.5, "train_runtime": 9.0, "total_flos": 1.0})
    return {"global_step": 20, "log_history": history}


def test_curves_from_latest_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoint-5").mkdir(parents=True)
    (run / "checkpoint-20").mkdir()
    (run / "checkpoint-5" / "trainer_state.json").write_text(json.dumps(_state([(5, 9.0)], [])))
    (run / "checkpoint-20" / "trainer_state.json").write_text(
        json.dumps(_state([(5, 2.5), (10, 1.8), (15, 1.4), (20, 1.2)], [(10, 1.9), (20, 1.6)])))
    result = curves.main([str(run), "--out", str(tmp_path / "fig")])
    out = tmp_path / "fig"
    for name in ("loss.png", "lr.png", "grad_norm.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "curves.md").read_text()
    assert "![loss](loss.png)" in md and "![learning rate](lr.png)" in md
    summary = result["summary"]
    assert summary["first_loss"] == 2.5 and summary["last_loss"] == 1.2
    assert summary["best_eval_loss"] == 1.6 and summary["best_eval_at"] == 20
    assert summary["max_learning_rate"] == pytest.approx(1e-3 * 0.75)
    printed = capsys.readouterr().out
    assert "1.800000" in printed and "1.900000" in printed
    saved = json.loads((out / "curves.json").read_text())
    assert [p[1] for p in saved["series"]["eval_loss"]] == [1.9, 1.6]
    with pytest.raises(SystemExit):  # exists, no --force
        curves.main([str(run), "--out", str(out)])


def test_curves_from_training_log(tmp_path):
    log = tmp_path / "train.log"
    log.write_text("starting\n{'loss': 2.0, 'grad_norm': 1.5, 'learning_rate': 0.001, 'epoch': 0.5}\n"
                   "noise {'loss': '1.5', 'grad_norm': '1.0', 'learning_rate': '0.0005', 'epoch': '1.0'}\n"
                   "{'train_runtime': 3.0, 'train_loss': 1.75, 'epoch': 1.0}\n")
    result = curves.main([str(log), "--out", str(tmp_path / "c")])
    assert result["x"] == "epoch"
    assert [p[1] for p in result["series"]["loss"]] == [2.0, 1.5]
    assert math.isclose(result["summary"]["max_learning_rate"], 0.001)
