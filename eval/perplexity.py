"""Held-out loss and perplexity over the assistant tokens of a chat JSONL, for one or more models.

Each conversation is rendered with the model's chat template; only assistant replies (their text and
the end-of-turn token the template puts after them) are scored, system and user tokens are masked, as
in training with `roles_to_train: [assistant]`. Loss is the mean over all scored tokens of all records;
perplexity is exp(loss).

  python -m eval.perplexity --data held.jsonl --model BASE --adapter RUN/adapter --compare-base --out DIR
  python -m eval.perplexity --data held.jsonl --model A --model B --adapter B_ADAPTER --out DIR

The data may be messages JSONL or any record format eval knows (ShareGPT, QA, RPG task, Alpaca).
Writes DIR/perplexity.json and DIR/perplexity.md.
"""
import argparse
import math
import sys

from common.errors import InputError, cli
from eval import _models, report
from eval._records import read_conversations, to_messages


def _render(tok, messages, add_generation_prompt=False):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tok, messages):
    """(rendered text, [(start, end)] character spans of each assistant reply and its end-of-turn token)."""
    if not getattr(tok, "chat_template", None):
        raise InputError("the tokenizer has no chat template")
    text = _render(tok, messages)
    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prefix = _render(tok, messages[:i], add_generation_prompt=True) if i else ""
        turn = _render(tok, messages[:i + 1])
        if text.startswith(prefix) and text.startswith(turn) and len(turn) > len(prefix) >= cursor:
            start, end = len(prefix), len(turn.rstrip())
        else:
            # templates that render earlier turns differently: find the reply text itself
            content = message["content"].strip()
            start = text.find(content, cursor)
            if start < 0:
                raise InputError(f"assistant message {i} is not in the chat template's rendering")
            end = start + len(content)
            eos = tok.eos_token or ""
            if eos and text.startswith(eos, end):
                end += len(eos)
        spans.append((start, end))
        cursor = end
    return text, spans


def assistant_tokens(tok, messages, max_length=None):
    """(input_ids, mask): the chat-template tokens of a conversation, mask True on assistant tokens."""
    text, spans = assistant_spans(tok, messages)
    if getattr(tok, "is_fast", False):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        mask = [any(s <= a < e for s, e in spans) for a, _ in enc["offset_mapping"]]
    else:  # slow tokenizer: token boundaries from tokenizing prefixes
        ids = tok(text, add_special_tokens=False)["input_ids"]
        mask = [False] * len(ids)
        for s, e in spans:
            a = len(tok(text[:s], add_special_tokens=False)["input_ids"])
            b = len(tok(text[:e], add_special_tokens=False)["input_ids"])
            for k in range(a, min(b, len(ids))):
                mask[k] = True
    if max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def _as_messages(record):
    if isinstance(record, list):
        return record
    if isinstance(record, dict):
        return to_messages(record)
    raise InputError(f"expected a record or a list of messages, got {type(record).__name__}")


def heldout_loss(model, tok, records, batch_size=8, max_length=2048):
    """Mean loss and perplexity over the assistant tokens of `records`.

    records: messages lists, or dicts in any format eval knows ({"messages": ...}, ShareGPT, QA, ...).
    Returns {"loss", "ppl", "tokens", "records"}.
    """
    import torch

    encoded = [assistant_tokens(tok, _as_messages(r), max_length) for r in records]
    encoded = [(ids, mask) for ids, mask in encoded if any(mask[1:])]
    if not encoded:
        raise InputError("no assistant tokens to score")
    encoded.sort(key=lambda e: -len(e[0]))
    device = next(model.parameters()).device
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        target = torch.zeros((len(batch), width), dtype=torch.bool)
        for row, (seq, mask) in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            attn[row, :len(seq)] = 1
            target[row, :len(seq)] = torch.tensor(mask)
        ids, attn, target = ids.to(device), attn.to(device), target.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=attn).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)
        nll = -logprobs.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        scored = target[:, 1:]
        total += nll[scored].sum().item()
        count += int(scored.sum().item())
    loss = total / count
    return {"loss": loss, "ppl": math.exp(loss) if loss < 700 else float("inf"), "tokens": count,
            "records": len(encoded)}


def evaluate(specs, conversations, compare_base=False, allow_pickle=False, device="auto", batch_size=8,
             max_length=2048):
    """One row per model (and per base when compare_base and the model has an adapter)."""
    rows = []
    for model_dir, adapter in specs:
        if compare_base and adapter is None:
            print(f"perplexity: --compare-base: {model_dir} has no adapter; its row is the base", file=sys.stderr)
        model, tok = _models.load(model_dir, adapter, allow_pickle, device)
        if compare_base and adapter is not None:
            with _models.base_of(model):
                rows.append({"label": "base", "model": str(model_dir), "adapter": None,
                             **heldout_loss(model, tok, conversations, batch_size, max_length)})
        label = "tuned" if adapter else "model"
        if any(r["label"] == label for r in rows):
            label = f"{label}{len(rows) + 1}"
        rows.append({"label": label, "model": str(model_dir),
                     "adapter": adapter and str(adapter),
                     **heldout_loss(model, tok, conversations, batch_size, max_length)})
        print(f"perplexity: {rows[-1]['model']}{' + ' + adapter if adapter else ''}: "
              f"loss {rows[-1]['loss']:.4f} ppl {rows[-1]['ppl']:.3f}", file=sys.stderr)
        del model
    return rows


def markdown(result):
    rep = report.Report("Held-out perplexity")
    rep.kv({"data": result["data"], "records": result["records"],
            "scored": "assistant tokens only (system and user masked)"})
    rep.table(["label", "model", "adapter", "loss", "perplexity", "tokens"],
              [[r["label"], r["model"], r["adapter"], r["loss"], r["ppl"], r["tokens"]] for r in result["results"]])
    return rep.render()


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.perplexity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="held-out JSONL (messages or another known format)")
    _models.add_model_args(parser, multi=True, gguf=False, endpoint=False)
    parser.add_argument("--compare-base", action="store_true",
                        help="also score each adapter's base model (adapter disabled), side by side")
    parser.add_argument("--limit", type=int, help="only the first N records")
    parser.add_argument("--max-length", type=int, default=2048, help="truncate conversations to N tokens")
    parser.add_argument("--out", required=True, help="output directory for perplexity.json and perplexity.md")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    args = parser.parse_args(argv)
    specs = _models.model_specs(args)
    for model_dir, _ in specs:
        if _models.is_gguf(model_dir):
            raise InputError("perplexity needs an HF model directory, not a GGUF file", model_dir)
    report.check_outputs(args.out, ["perplexity.json", "perplexity.md"], args.force)  # before the slow part
    conversations = read_conversations(args.data, args.limit)
    rows = evaluate(specs, conversations, args.compare_base, args.allow_pickle, args.device, args.batch_size,
                    args.max_length)
    result = {"data": args.data, "records": len(conversations), "results": rows}
    report.write_outputs(args.out, {"perplexity.json": report.dumps(result), "perplexity.md": markdown(result)},
                         args.force)
    print(markdown(result), end="")
    return result


if __name__ == "__main__":
    main()
