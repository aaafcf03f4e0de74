"""Blind A/B: make a sheet, fill it, score it; unblinding must credit the right model. The judge runs
against a small local OpenAI-compatible HTTP endpoint (the real openai client over real HTTP)."""
import csv
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from eval import ab

PERSONA = "You are Vex, a pirate."


def write_report(path, name, outputs):
    settings = {"model": name, "adapter": None, "backend": "hf", "temperature": 0.0, "top_p": 1.0, "seed": 0,
                "max_new_tokens": 32, "system": PERSONA, "prompts": "p.jsonl"}
    with open(path, "w") as fh:
        for n, output in enumerate(outputs):
            prompt = [{"role": "system", "content": PERSONA}, {"role": "user", "content": f"question {n}?"}]
            fh.write(json.dumps({"id": n, "prompt": prompt, "output": output, "reference": None,
                                 "metrics": None, "settings": settings}) + "\n")


@pytest.fixture
def sheet(tmp_path):
    """A sheet over 12 prompts: the tuned model's replies say 'Arr', the base model's say 'As an AI'."""
    tuned, base = tmp_path / "tuned.jsonl", tmp_path / "base.jsonl"
    write_report(tuned, "outputs/run/adapter", [f"Arr, answer {n} from the tuned model." for n in range(12)])
    write_report(base, "base-model", [f"As an AI, answer {n}." for n in range(12)])
    out = tmp_path / "ab"
    ab.main(["make-sheet", "--a", str(tuned), "--b", str(base), "--name-a", "tuned", "--name-b", "base",
             "--seed", "7", "--out", str(out)])
    return out


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=ab.SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def fill_preferring_tuned(rows):
    """A rater who can tell the replies apart by content only (never sees the key)."""
    for row in rows:
        tuned_side = "A" if row["response_A"].startswith("Arr") else "B"
        other = "B" if tuned_side == "A" else "A"
        row["preference"] = tuned_side
        for crit in ab.RUBRIC:
            row[f"{crit}_{tuned_side}"] = "5"
            row[f"{crit}_{other}"] = "2"
    return rows


def test_sheet_is_shuffled_anonymised_and_seeded(sheet, tmp_path):
    rows = read_rows(sheet / "sheet.csv")
    assert list(rows[0]) == ab.SHEET_COLUMNS and len(rows) == 12
    key = json.loads((sheet / "key.private.json").read_text())
    assert set(key["rows"]) == {r["row_id"] for r in rows}
    a_sides = [key["rows"][r["row_id"]]["A"] for r in rows]
    assert "tuned" in a_sides and "base" in a_sides  # sides are mixed
    assert [key["rows"][r["row_id"]]["source_index"] for r in rows] != list(range(12))  # order shuffled
    sheet_text = (sheet / "sheet.csv").read_text() + (sheet / "sheet.html").read_text()
    assert "tuned" not in sheet_text.replace("tuned model", "") and "base" not in sheet_text
    html = (sheet / "sheet.html").read_text()
    assert "Download filled CSV" in html and html.count("<section class='row'>") == 12
    assert "id='remaining'" in html  # the unrated-rows count (tests/test_ab_browser.py runs the page)
    assert not re.search(r"https?:|<link|\bsrc=|@import|url\(", html)  # works offline: nothing fetched
    # the same seed gives the same sheet
    again = tmp_path / "again"
    ab.main(["make-sheet", "--a", str(tmp_path / "tuned.jsonl"), "--b", str(tmp_path / "base.jsonl"),
             "--name-a", "tuned", "--name-b", "base", "--seed", "7", "--out", str(again)])
    assert (again / "sheet.csv").read_text() == (sheet / "sheet.csv").read_text()
    with pytest.raises(SystemExit):  # no overwrite without --force
        ab.main(["make-sheet", "--a", str(tmp_path / "tuned.jsonl"), "--b", str(tmp_path / "base.jsonl"),
                 "--name-a", "tuned", "--name-b", "base", "--out", str(sheet)])


def test_round_trip_unblinds_to_the_tuned_model(sheet, tmp_path):
    filled = tmp_path / "rater1.csv"
    write_rows(filled, fill_preferring_tuned(read_rows(sheet / "sheet.csv")))
    result = ab.main(["score", "--key", str(sheet / "key.private.json"), str(filled), "--out", str(tmp_path / "s")])
    tuned, base = result["models"]["tuned"], result["models"]["base"]
    assert tuned["win_rate"] == 1.0 and tuned["wins"] == 12 and tuned["losses"] == 0
    assert base["win_rate"] == 0.0 and base["losses"] == 12
    assert tuned["rubric_means"] == dict.fromkeys(ab.RUBRIC, 5.0)
    assert base["rubric_means"] == dict.fromkeys(ab.RUBRIC, 2.0)
    md = (tmp_path / "s" / "ab_scores.md").read_text()
    assert "| tuned | 1.0000 |" in md


def test_score_ties_blanks_and_bad_values(sheet, tmp_path):
    rows = read_rows(sheet / "sheet.csv")
    rows[0]["preference"] = "tie"
    rows[1]["preference"] = "b"
    second = tmp_path / "r2.csv"
    write_rows(second, rows)
    result = ab.main(["score", "--key", str(sheet / "key.private.json"), str(second), "--out", str(tmp_path / "s")])
    assert result["rated"] == 2 and result["unrated"] == 10
    key = json.loads((sheet / "key.private.json").read_text())
    winner = key["rows"][rows[1]["row_id"]]["B"]
    assert result["models"][winner]["wins"] == 1 and result["models"][winner]["ties"] == 1
    assert result["models"][winner]["win_rate"] == 0.5

    rows[2]["preference"] = "maybe"
    bad = tmp_path / "bad.csv"
    write_rows(bad, rows)
    with pytest.raises(SystemExit):
        ab.main(["score", "--key", str(sheet / "key.private.json"), str(bad), "--out", str(tmp_path / "x")])
    rows[2]["preference"], rows[2]["voice_A"] = "A", "9"
    write_rows(bad, rows)
    with pytest.raises(ab.InputError, match="voice_A"):
        ab.read_sheet(bad, key)


def test_make_sheet_from_two_models(tinyllama, llama31, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("ahoy\nwho are you?\n")
    out = tmp_path / "ab"
    key = ab.main(["make-sheet", "--prompts", str(prompts), "--model-a", str(tinyllama), "--model-b", str(llama31),
                   "--system", PERSONA, "--max-new-tokens", "3", "--out", str(out)])
    assert set(key["models"]) == {str(tinyllama), str(llama31)} and len(key["rows"]) == 2
    assert "SYSTEM: You are Vex" in read_rows(out / "sheet.csv")[0]["prompt"]


def test_pairing_refuses_different_prompts(tmp_path):
    write_report(tmp_path / "a.jsonl", "a", ["x", "y"])
    write_report(tmp_path / "b.jsonl", "b", ["x"])
    with pytest.raises(SystemExit):
        ab.main(["make-sheet", "--a", str(tmp_path / "a.jsonl"), "--b", str(tmp_path / "b.jsonl"),
                 "--out", str(tmp_path / "o")])


class JudgeEndpoint(BaseHTTPRequestHandler):
    """A minimal OpenAI-compatible /v1/chat/completions that always prefers reply A."""

    requests = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeEndpoint.requests.append((self.path, self.headers.get("Authorization"), body))
        verdict = {"A": dict.fromkeys(ab.RUBRIC, 4), "B": dict.fromkeys(ab.RUBRIC, 2), "preference": "A",
                   "reason": "A sounds like a pirate."}
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop",
                              "message": {"role": "assistant", "content": "Verdict:\n" + json.dumps(verdict)}}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_judge_fills_the_sheet(sheet, tmp_path, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("JUDGE_KEY", "secret-for-test")
    try:
        filled = tmp_path / "judge.csv"
        ab.main(["judge", "--sheet", str(sheet / "sheet.csv"), "--out", str(filled), "--model", "judge-m",
                 "--base-url", f"http://127.0.0.1:{server.server_address[1]}/v1", "--api-key-env", "JUDGE_KEY"])
    finally:
        server.shutdown()
    path, auth, body = JudgeEndpoint.requests[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer secret-for-test" and body["model"] == "judge-m"
    assert "Reply A" in body["messages"][1]["content"]
    rows = read_rows(filled)
    assert all(r["preference"] == "A" and r["voice_A"] == "4" and r["voice_B"] == "2" for r in rows)
    result = ab.main(["score", "--key", str(sheet / "key.private.json"), str(filled), "--out", str(tmp_path / "s")])
    key = json.loads((sheet / "key.private.json").read_text())
    tuned_as_a = sum(1 for r in key["rows"].values() if r["A"] == "tuned")
    assert result["models"]["tuned"]["wins"] == tuned_as_a
    assert result["models"]["base"]["wins"] == 12 - tuned_as_a


def test_parse_verdict():
    assert ab.parse_verdict("no json here") is None
    assert ab.parse_verdict('{"preference": "C"}') is None
    fields = ab.parse_verdict('```json\n{"A": {"voice": 5, "length": 9}, "preference": "Tie"}\n```')
    assert fields["preference"] == "tie" and fields["voice_A"] == "5" and "length_A" not in fields
