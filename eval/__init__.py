"""Evaluation helpers, each a CLI (`python -m eval.<name> --help`):

metrics (pure text metrics), perplexity (held-out loss on assistant tokens), task (QA / RPG task
metrics), batch (prompt file -> JSONL report, HF or GGUF), chat (terminal chat), ab (blind A/B rater
sheets, scoring, LLM judge), redteam (character-break suite), curves (training curves from
trainer_state.json), report (Markdown reports). Shared code: _models (loading, generation), _records.

For other code: eval.perplexity.heldout_loss(model, tok, records) and
eval.task.evaluate_qa(model, tok, records, max_new_tokens), with (model, tok) = eval._models.load(dir, adapter).
"""
