"""Chat with a model in the terminal, through its own chat template.

Model: an HF directory (optionally with --adapter) or a .gguf file (llama.cpp). Reads one user message
per line from stdin, so it also works with piped input:

  python -m eval.chat --model BASE --adapter RUN/adapter --system "You are Vex, a pirate."
  printf 'hello\\n/reset\\nwho are you?\\n/exit\\n' | python -m eval.chat --model BASE --temperature 0

Replies are printed as the model writes them (token by token, for HF models, GGUF files and endpoints).
Commands: /reset (forget the conversation, keep the system prompt), /exit (or end of input).
"""
import argparse
import sys
import threading

from common.errors import InputError, cli
from eval import _models

HELP = "commands: /reset forgets the conversation, /exit quits"


def fresh(system):
    return [{"role": "system", "content": system}] if system else []


def trim(history, max_turns):
    """Keep the system prompt and the last max_turns user/assistant exchanges."""
    head = history[:1] if history and history[0]["role"] == "system" else []
    body = history[len(head):]
    return head + body[-2 * max_turns:] if max_turns else history


def _stream_hf(generator, messages, max_new_tokens, temperature, top_p, seed):
    import torch
    from transformers import TextIteratorStreamer

    model, tok = generator.model, generator.tok
    enc = tok(_models.render_prompt(tok, messages), return_tensors="pt", add_special_tokens=False)
    enc = {k: v.to(next(model.parameters()).device) for k, v in enc.items()}
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, streamer=streamer)
    if temperature and temperature > 0:
        kwargs.update(do_sample=True, temperature=float(temperature), top_p=float(top_p), top_k=0)
        torch.manual_seed(seed)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    failed = []

    def run():
        try:
            with torch.no_grad():
                model.generate(**enc, **kwargs)
        except BaseException as err:  # shown in the chat thread, after the streamer is released
            failed.append(err)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if failed:
        raise failed[0]


def _stream_gguf(generator, messages, max_new_tokens, temperature, top_p, seed):
    generator.llm.reset()  # as GGUFGenerator.generate: no KV cache reuse across calls
    for chunk in generator.llm.create_chat_completion(
            messages=messages, max_tokens=max_new_tokens, temperature=float(temperature or 0.0),
            top_p=float(top_p), seed=seed, stream=True):
        yield chunk["choices"][0]["delta"].get("content") or ""


def _stream_endpoint(generator, messages, max_new_tokens, temperature, top_p, seed):
    from openai import APIConnectionError, OpenAIError

    try:
        for chunk in generator.client.chat.completions.create(
                model=generator.model_dir, messages=messages, max_tokens=max_new_tokens,
                temperature=float(temperature or 0.0), top_p=float(top_p), seed=seed, stream=True):
            if chunk.choices:
                yield chunk.choices[0].delta.content or ""
    except APIConnectionError:
        raise InputError(f"lost {generator.base_url} (is the server still running?)", field="base-url") from None
    except OpenAIError as err:
        raise InputError(f"{generator.base_url}: {err}", field="model") from None


STREAMERS = {"hf": _stream_hf, "gguf": _stream_gguf, "endpoint": _stream_endpoint}


def stream_reply(generator, messages, max_new_tokens, temperature, top_p, seed):
    """The reply to `messages` in pieces as the model writes them (one piece for other generators)."""
    streamer = STREAMERS.get(getattr(generator, "kind", None))
    if streamer is None:
        yield generator.generate([messages], max_new_tokens, temperature, top_p, seed)[0]
    else:
        yield from streamer(generator, messages, max_new_tokens, temperature, top_p, seed)


def chat(generator, system=None, stdin=None, stdout=None, max_new_tokens=256, temperature=0.7, top_p=0.9,
         seed=0, max_turns=20, name="assistant"):
    """The chat loop; returns the number of replies given."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty()
    history, replies = fresh(system), 0
    if interactive:
        print(f"chatting with {generator.name}; {HELP}", file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            history = fresh(system)
            print("(conversation reset)", file=stdout, flush=True)
            continue
        if text.startswith("/") and " " not in text:
            print(f"(unknown command {text}; {HELP})", file=stdout, flush=True)
            continue
        history = trim(history + [{"role": "user", "content": text}], max_turns)
        print(f"{name}> ", end="", file=stdout, flush=True)
        reply, held = "", ""  # whitespace is held back until text follows: what is shown is the stripped reply
        for piece in stream_reply(generator, history, max_new_tokens, temperature, top_p, seed + replies):
            part = held + piece if reply else piece.lstrip()
            shown = part.rstrip()
            held = part[len(shown):]
            if shown:
                reply += shown
                print(shown, end="", file=stdout, flush=True)
        print(file=stdout, flush=True)
        history.append({"role": "assistant", "content": reply})
        replies += 1
    return replies


@cli
def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m eval.chat", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _models.add_model_args(parser)
    parser.add_argument("--system", help="system prompt (e.g. the persona)")
    parser.add_argument("--system-file", help="read the system prompt from a file")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-turns", type=int, default=20, help="exchanges kept in the context")
    parser.add_argument("--n-ctx", type=int, default=4096, help="context size for a GGUF model")
    parser.add_argument("--name", default="assistant", help="label printed before each reply")
    args = parser.parse_args(argv)
    system = args.system
    if args.system_file:
        if system:
            raise InputError("give --system or --system-file, not both")
        with open(args.system_file, encoding="utf-8") as fh:
            system = fh.read().strip()
    generator = _models.open_generator(args.model, args.adapter, args.allow_pickle, args.device, 1, args.n_ctx,
                                       base_url=args.base_url)
    return chat(generator, system, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_p=args.top_p, seed=args.seed, max_turns=args.max_turns, name=args.name)


if __name__ == "__main__":
    main()
