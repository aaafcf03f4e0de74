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
