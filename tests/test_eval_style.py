"""eval.style: the persona style metric used by the persona use case (scripts/results.py)."""
import json
import subprocess
import sys

from common import ROOT
from eval import style

VEX = ["lol arr the hold is full 🦜", "nah matey, fog's too thick rn", "aye aye ⚓ gonna check the rigging",
       "tbh the cook's stew is cursed 😂", "ngl i miss port"]
ASSISTANT = ["As an AI language model, I cannot sail a ship. However, here are some tips on navigation.",
             "Certainly! The hold of a ship is the space below the deck where cargo is stored.",
             "I'm here to help. Fog can reduce visibility significantly; it's important to note that...",
             "Great question! Stew is a dish of vegetables and meat cooked slowly in liquid.",
             "Feel free to ask me anything about ports and harbors."]


def test_the_persona_is_at_distance_zero_from_itself():
    result = style.compare(VEX, VEX, ["arr", "aye", "matey"])
    assert all(d == 0 for d in result["distance"].values()), result["distance"]
    assert result["vocab_overlap"] == 1 and result["assistant_speak"] == 0


def test_persona_like_replies_are_closer_than_assistant_speak_on_every_feature():
    slang = ["arr", "aye", "matey"]
    base = style.compare(ASSISTANT, VEX, slang)
    tuned = style.compare(["lol aye the hold's full 😂", "nah, too much fog rn", "arr gonna nap",
                           "tbh stew again", "ngl port is better 🦜"], VEX, slang)
    assert style.closer(base, tuned) == list(style.FEATURES)
    assert base["assistant_speak"] == 1.0 and tuned["assistant_speak"] == 0
    # and not the other way round
    assert style.closer(tuned, base) == []


def test_features_count_what_they_say():
    p = style.profile(["hi 👩‍👩‍👧 there", "Hello There", "lol ok"])
    assert p["emoji"] == 1 / 3          # a ZWJ family is one emoji
    assert p["lowercase"] == 2 / 3      # "Hello There" has capitals
    assert p["lengths"] == [2, 2, 2] and p["slang"] == 1 / 6


def test_cli(tmp_path):
    heldout, replies = tmp_path / "heldout.jsonl", tmp_path / "replies.jsonl"
    heldout.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "hey"},
                                                        {"role": "assistant", "content": t}]}) + "\n" for t in VEX))
    replies.write_text("".join(json.dumps({"output": t}) + "\n" for t in ASSISTANT))
    out = subprocess.run([sys.executable, "-m", "eval.style", "--persona", str(heldout), "--replies", str(replies),
                          "--slang", "arr,aye"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["assistant_speak"] == 1.0 and result["distance"]["lowercase"] == 1.0
