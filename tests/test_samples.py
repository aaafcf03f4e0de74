"""The checked-in sample data is what its generator writes, and its splits keep phrasings apart."""
import json

from common import ROOT
from scripts.samples import qa

QA_DIR = ROOT / "recipes" / "tinyllama-qa" / "data"


def test_qa_generator_reproduces_the_checked_in_files(tmp_path):
    paths = qa.write(tmp_path)
    for split, path in paths.items():
        assert path.read_bytes() == (QA_DIR / f"qa_{split}.jsonl").read_bytes(), f"rerun python -m scripts.samples.qa --force ({split})"


def test_qa_splits_share_facts_but_no_question():
    rows = {split: [json.loads(line) for line in (QA_DIR / f"qa_{split}.jsonl").open()] for split in qa.SPLITS}
    questions = {split: {r["question"] for r in rs} for split, rs in rows.items()}
    assert not questions["train"] & questions["val"] and not questions["train"] & questions["heldout"]
    assert not questions["val"] & questions["heldout"]
    trained_answers = {r["answer"] for r in rows["train"]}
    for r in rows["heldout"] + rows["val"]:  # every evaluated fact is stated in training
        assert r["answer"] in trained_answers
        assert all(k.lower() in r["answer"].lower() for k in r["answer_keywords"])
    assert rows["heldout"][0]["question"] == "What does error E12 indicate?"  # the quickstart's probe


def test_qa_training_messages_are_the_converted_training_split(tmp_path):
    from data_tools.qa import convert_file

    convert_file(QA_DIR / "qa_train.jsonl", tmp_path / "train.messages.jsonl")
    assert (tmp_path / "train.messages.jsonl").read_bytes() == (QA_DIR / "train.messages.jsonl").read_bytes(), \
        "rerun the converter (recipes/tinyllama-qa/README.md)"


RPG_DIR = ROOT / "recipes" / "tinyllama-rpg" / "data"


def test_rpg_generator_reproduces_the_checked_in_files(tmp_path):
    """(The converted train and val files: tests/test_recipes.py, CONVERTED.)"""
    from scripts.samples import rpg

    for split, path in rpg.write(tmp_path).items():
        assert path.read_bytes() == (RPG_DIR / f"rpg_{split}.jsonl").read_bytes(), f"rerun python -m scripts.samples.rpg --force ({split})"


def test_rpg_held_out_cases_never_occur_in_training():
    from scripts.samples import rpg

    rows = {split: [json.loads(line) for line in (RPG_DIR / f"rpg_{split}.jsonl").open()] for split in rpg.SPLITS}
    tasks = {split: {r["task"] for r in rs} for split, rs in rows.items()}
    assert not tasks["train"] & tasks["heldout"] and not tasks["train"] & tasks["val"]
    train_text = " ".join(tasks["train"])
    for split in ("val", "heldout"):  # unseen entities: items, quests, creatures, dice uses
        for name in rpg.ITEMS[split] + rpg.QUESTS[split] + rpg.CREATURES[split] + rpg.DICE_USES[split]:
            assert name not in train_text, name
        assert not set(rpg.ATTACKS[split]) & set(rpg.ATTACKS["train"])  # attack names ("glass orb" is an item)
    sentences = {split: {d for ds in rpg.STATUS.values() for d in ds if any(
        r["task"].startswith(d.format(c=c)[0].upper() + d.format(c=c)[1:]) for r in rows[split]
        for c in rpg.CREATURES[split])} for split in rpg.SPLITS}
    assert sentences["heldout"] and not sentences["heldout"] & sentences["train"]
    assert len(rows["heldout"]) == 60


def test_character_generator_reproduces_its_file_and_keeps_the_red_team_prompts_out(tmp_path):
    from eval.redteam import PROMPTS
    from scripts.samples import character

    path = character.write(tmp_path)["character_train.jsonl"]
    assert path.read_bytes() == (character.DATA / "character_train.jsonl").read_bytes(), \
        "rerun python -m scripts.samples.character --force"
    rows = [json.loads(line) for line in path.open()]
    asked = {r["conversations"][1]["value"].lower() for r in rows}
    assert not asked & {p.lower() for p in PROMPTS}
    assert {r["conversations"][0]["value"] for r in rows} == {character.persona()}


def test_discord_generator_reproduces_its_files_and_keeps_held_out_topics_unseen(tmp_path):
    from scripts.samples import discord

    for name, path in discord.write(tmp_path).items():
        assert path.read_bytes() == (discord.DATA / name).read_bytes(), "rerun python -m scripts.samples.discord --force"
    export = json.loads((discord.DATA / "galley_export.json").read_text())
    said = " ".join(m["content"] for m in export["messages"]).lower()
    for thing, _ in discord.HELDOUT_TOPICS:
        assert thing not in said, thing
    heldout = [json.loads(line)["messages"] for line in (discord.DATA / "vex_heldout.jsonl").open()]
    assert len(heldout) == discord.HELDOUT and all(m[-1]["role"] == "assistant" for m in heldout)
    authors = {m["author"]["nickname"] for m in export["messages"]}
    assert "Vex" in authors and any(m["author"]["isBot"] for m in export["messages"])


def test_alpaca_generator_reproduces_its_files_and_holds_out_its_entities(tmp_path):
    from scripts.samples import alpaca

    for split, path in alpaca.write(tmp_path).items():
        assert path.read_bytes() == (alpaca.DATA / f"instructions_{split}.jsonl").read_bytes(), \
            "rerun python -m scripts.samples.alpaca --force"
    rows = {split: [json.loads(line) for line in (alpaca.DATA / f"instructions_{split}.jsonl").open()]
            for split in alpaca.SPLITS}
    assert {s: len(r) for s, r in rows.items()} == alpaca.SPLITS
    seen_inputs = {r["input"] for r in rows["train"]}
    seen_outputs = {r["output"] for r in rows["train"]}
    for r in rows["heldout"]:  # never the same input, and only list answers may reuse trained items
        assert r["input"] not in seen_inputs and r["output"] not in seen_outputs, r
    assert {r["instruction"] for r in rows["heldout"]} <= {i for wordings in alpaca.FAMILIES.values() for i in wordings}


def test_general_replay_is_the_base_models_own_replies_to_prompts_the_retention_set_never_asks():
    """The replay file mixed into the rpg and persona recipes: the same file in both folders, prompts
    disjoint from eval/data/general_heldout.jsonl, and replies the embedded model itself gives (greedy)."""
    from scripts.samples import general

    files = [folder / general.NAME for folder in general.FOLDERS]
    assert files[0].read_bytes() == files[1].read_bytes()
    rows = [json.loads(line) for line in files[0].open()]
    asked = [r["messages"][0]["content"] for r in rows]
    assert len(rows) >= 50 and set(asked) <= set(general.prompts())
    held = {json.loads(line)["messages"][0]["content"].lower() for line in (ROOT / "eval/data/general_heldout.jsonl").open()}
    assert not {p.lower() for p in general.prompts()} & held
    kept, dropped = general.replies(asked[:3])
    assert not dropped and kept == [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows[:3]], \
        "rerun python -m scripts.samples.general --force"
