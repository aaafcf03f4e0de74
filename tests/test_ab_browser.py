"""The A/B rater page in a real browser (Debian's headless chromium over the DevTools protocol): a rater
using only the keyboard fills every row, watches the count of unrated rows, downloads the CSV, and
`eval.ab score` credits each rating to the model that wrote the reply."""
import csv
import os
import re
import shutil

import pytest

from eval import ab
from tests.cdp import Chromium
from tests.test_eval_ab import write_report
from tests.tools import require

N = 6
TUNED = {"voice": "5", "in_character": "4", "coherence": "5", "engagement": "3", "length": "4"}
BASE = {"voice": "1", "in_character": "2", "coherence": "3", "engagement": "2", "length": "5"}
NOTE = 'reads well, "mostly"; 50/50'


@pytest.fixture
def sheet(tmp_path):
    tuned, base = tmp_path / "tuned.jsonl", tmp_path / "base.jsonl"
    write_report(tuned, "run/adapter", [f"Arr, answer {n} from the tuned model." for n in range(N)])
    write_report(base, "base-model", [f"As an AI, answer {n}." for n in range(N)])
    out = tmp_path / "ab"
    ab.main(["make-sheet", "--a", str(tuned), "--b", str(base), "--name-a", "tuned", "--name-b", "base",
             "--seed", "3", "--out", str(out)])
    return out


def save_artifact(path):
    target = os.environ.get("TEST_ARTIFACTS")
    if target:
        os.makedirs(target, exist_ok=True)
        shutil.copy2(path, os.path.join(target, os.path.basename(path)))


def test_rating_page_with_keyboard_only(sheet, tmp_path):
    chromium = require("chromium", "chromium")
    page_text = (sheet / "sheet.html").read_text(encoding="utf-8")
    # offline: nothing is fetched from anywhere (no CDN script, font, stylesheet or image)
    assert not re.search(r"https?:|<link|\bsrc=|@import|url\(", page_text)
    key = ab.read_key(sheet / "key.private.json")
    assert {r["A"] for r in key["rows"].values()} == {"tuned", "base"}  # both sides occur: unblinding matters

    downloads = tmp_path / "downloads"
    with Chromium(chromium, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads),
                                                     "eventsEnabled": True})
        page = browser.new_page()
        page.send("Network.enable")
        page.goto((sheet / "sheet.html").as_uri())
        remaining = "document.getElementById('remaining').textContent"
        assert page.eval(remaining) == f"{N} of {N} rows still unrated"
        # what a rater sees: each row's id and its two replies
        shown = page.eval("Array.from(document.querySelectorAll('section.row')).map(s => ["
                          "s.querySelector('h2').textContent, s.querySelector('[data-col=response_A]').textContent])")
        assert len(shown) == N
        expected_prefs = {}
        for n, (row_id, response_a) in enumerate(shown):
            tuned_side = "A" if response_a.startswith("Arr") else "B"
            for crit in ab.RUBRIC:
                for side in "AB":
                    page.press("Tab")
                    assert page.eval("document.activeElement.dataset.col") == f"{crit}_{side}"
                    page.press((TUNED if side == tuned_side else BASE)[crit])
            page.press("Tab")  # into the preference radios, on A
            if n == N - 1:  # the last row is a tie: arrows move and select
                page.press("ArrowRight")
                page.press("ArrowRight")
                expected_prefs[row_id] = "tie"
            elif tuned_side == "A":
                page.press(" ")
                expected_prefs[row_id] = "A"
            else:
                page.press("ArrowRight")
                expected_prefs[row_id] = "B"
            page.press("Tab")
            assert page.eval("document.activeElement.dataset.col") == "notes"
            if n == 0:
                page.type(NOTE)
            left = N - n - 1
            assert page.eval(remaining) == (f"{left} of {N} rows still unrated" if left else f"all {N} rows rated")
        page.press("Tab")
        assert page.eval("document.activeElement.textContent") == "Download filled CSV"
        screenshot = page.screenshot(tmp_path / "ab-sheet.png")
        page.press("Enter")
        done = browser.wait_event("Browser.downloadProgress", lambda e: e["state"] in ("completed", "canceled"))
        assert done["state"] == "completed"
        requested = [e["request"]["url"] for e in browser.events("Network.requestWillBeSent")]
    save_artifact(screenshot)
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 10_000
    assert all(url.startswith(("file:", "blob:", "data:")) for url in requested), requested

    filled = downloads / "sheet-filled.csv"
    with open(filled, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    with open(sheet / "sheet.csv", newline="", encoding="utf-8") as fh:
        original = list(csv.DictReader(fh))
    assert list(rows[0]) == ab.SHEET_COLUMNS
    text_cols = ["row_id", "prompt", "response_A", "response_B"]
    assert [[r[c] for c in text_cols] for r in rows] == [[r[c] for c in text_cols] for r in original]
    assert {r["row_id"]: r["preference"] for r in rows} == expected_prefs
    assert rows[0]["notes"] == NOTE and all(r["notes"] == "" for r in rows[1:])

    result = ab.main(["score", "--key", str(sheet / "key.private.json"), str(filled), "--out", str(tmp_path / "s")])
    tuned, base = result["models"]["tuned"], result["models"]["base"]
    assert result["rated"] == N and result["unrated"] == 0
    assert (tuned["wins"], tuned["losses"], tuned["ties"]) == (N - 1, 0, 1)
    assert (base["wins"], base["losses"], base["ties"]) == (0, N - 1, 1)
    assert tuned["rubric_means"] == {c: float(v) for c, v in TUNED.items()}
    assert base["rubric_means"] == {c: float(v) for c, v in BASE.items()}
