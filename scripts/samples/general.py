"""General chat replay: everyday questions and requests answered by the embedded SmolLM2-135M-Instruct itself.

A LoRA trained only on one task drifts on everything else: the RPG and persona adapters answered general
questions in their trained voice (retention perplexity +120% and +113%). Mixing the base model's own
replies to general prompts into their training data (replay, a form of self-distillation) teaches the
adapter to keep the base's behaviour outside its task: the replies are what the base already says, so
they add no new knowledge and no new style. The prompts carry no system prompt, as general use does.

Writes general.messages.jsonl (messages JSONL) into the data folders of the recipes that mix it in:
recipes/tinyllama-rpg/data and recipes/tinyllama-discord-persona/data. None of the prompts is one of
eval/data/general_heldout.jsonl's (the retention set; a test checks), though many are of the same kinds
(capitals, counts, opposites, small requests): the replies are the base's own, right or wrong, so they
teach no answer the base did not already give, only to keep giving its answers. Replies are greedy, so the same
model writes the same file; a reply that does not end within MAX_NEW_TOKENS is dropped and counted
(a cut reply would teach the model to stop mid-sentence).

  python -m scripts.samples.general [--out DIR] [--force]   (DIR: one folder instead of both)
"""
import sys
from pathlib import Path

from common import ROOT, offline_defaults
from common.errors import cli
from common.io import check_output, write_jsonl
from common.models import EMBEDDED, local_model
from scripts import samples

FOLDERS = [ROOT / "recipes" / "tinyllama-rpg" / "data", ROOT / "recipes" / "tinyllama-discord-persona" / "data"]
NAME = "general.messages.jsonl"
MAX_NEW_TOKENS = 128

CAPITALS = ["Germany", "Spain", "Canada", "Australia", "Egypt", "Kenya", "India", "Norway", "Greece",
            "Portugal", "Mexico", "Argentina", "Ireland", "Thailand", "Peru", "Sweden"]
FACTS = [
    "How many planets are in our solar system?", "What is the largest mammal?",
    "What do caterpillars turn into?", "What is the hardest natural substance?",
    "What gas do people breathe out?", "How many bones does an adult human have?",
    "Why is the sky blue?", "What causes the seasons on Earth?", "What is gravity?",
    "How many sides does a hexagon have?", "What is 12 times 12?", "What is the square root of 81?",
    "Who painted the Mona Lisa?", "Who was the first person to walk on the Moon?",
    "What is the longest river in Africa?", "What is the smallest prime number?",
    "How many minutes are in an hour?", "How many months have 31 days?", "What is a synonym for happy?",
    "What is the plural of mouse?", "What do cows eat?", "Where do penguins live?",
    "What is the main gas in the air we breathe?", "How does a rainbow form?",
    "What is the difference between weather and climate?", "What does a thermometer measure?",
    "What is the largest desert in the world?", "Which metal is liquid at room temperature?",
    "How many players are on a football team?", "What instrument has 88 keys?",
    "What is the chemical symbol for gold?", "How long does it take the Earth to orbit the Sun?",
    "What is an adjective?", "What is the past tense of run?", "What is a volcano?",
    "Why do leaves change color in autumn?", "What is the largest country by area?",
    "What language is spoken in Mexico?", "What is the currency of Japan?", "What do you call a baby dog?",
]
REQUESTS = [
    "Write a haiku about rain.", "Write a two-sentence story about a dragon.",
    "Write a thank-you note to a teacher.", "Give me three tips for learning a new language.",
    "Give me one tip for staying focused while studying.", "Suggest a name for a small bakery.",
    "How do I boil an egg?", "Explain what a computer virus is.", "Explain recycling to a child.",
    "Give me a simple recipe for a fruit salad.", "What should I pack for a day at the beach?",
    "Write a short birthday message for my sister.", "How can I save money on groceries?",
    "Give me two ideas for a rainy afternoon.", "Describe a sunset in one sentence.",
    "Write a polite email asking for a day off.", "What are the benefits of drinking water?",
    "How do I make a cup of tea?", "Give me a fun fact about octopuses.",
    "Suggest a good habit to start in the morning.", "Explain what a noun is with an example.",
    "Write a short poem about the ocean.", "What is a good way to start a conversation with a new neighbor?",
    "How do plants grow from seeds?", "Give me three words that rhyme with light.",
    "Translate 'thank you' into French.", "Translate 'cat' into German.",
    "Translate 'good night' into Italian.", "Write a sentence using the word 'curious'.",
    "Summarize in one sentence: The library will close early on Friday because the heating is being repaired.",
    "Summarize in one sentence: Tom missed the bus, so he walked to school and arrived late for his exam.",
    "Summarize in one sentence: The city opened a new park with a playground, a pond and walking paths.",
    "What is the difference between a frog and a toad?", "Why is exercise good for you?",
    "How do I tie a simple knot?", "Give me a riddle and its answer.",
    "Recommend a hobby for someone who likes being outdoors.", "How do airplanes stay in the air?",
    "What is the best way to learn to type faster?", "Explain what the internet is in simple words.",
]
SHORT = [  # one-line questions and requests: most replies end well within MAX_NEW_TOKENS
    "What is the capital of Libya?", "What is the capital of South Korea?",
    "What is the capital of Chile?", "What is the capital of Vietnam?", "What is the capital of Poland?",
    "What is the capital of Turkey?", "What is the capital of Nigeria?", "What is the capital of Cuba?",
    "What color is a ripe banana?", "What color are most leaves in summer?", "What is 7 plus 8?",
    "What is 100 divided by 4?", "What is 9 times 6?", "How many wheels does a bicycle have?",
    "How many legs does an insect have?", "How many strings does a violin have?",
    "What is the opposite of up?", "What is the opposite of early?", "What is the plural of child?",
    "What is the past tense of eat?", "What animal says moo?", "What do you call a baby sheep?",
    "What do you call a group of wolves?", "Which bird is a symbol of peace?",
    "What fruit is dried to make raisins?", "What vegetable is used to make fries?",
    "Which month comes after March?", "What day comes after Friday?", "How many seconds are in a minute?",
    "What shape has three sides?", "What is frozen water called?", "What do you use to write on a blackboard?",
    "What is the first letter of the English alphabet?", "Name a primary color.",
    "Say hello in a friendly way.", "Give me a word that means big.", "Name three fruits.",
    "Name a famous composer.", "Name a planet other than Earth.", "Write one sentence about cats.",
]


def prompts():
    return [f"What is the capital of {country}?" for country in CAPITALS] + FACTS + REQUESTS + SHORT


def replies(prompts, model_dir=None):
    """(kept [(prompt, reply)], dropped prompts): greedy replies of the embedded model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from eval._models import render_prompt

    model_dir = model_dir or local_model(EMBEDDED)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    kept, dropped = [], []
    for i, prompt in enumerate(prompts, 1):
        ids = tok(render_prompt(tok, [{"role": "user", "content": prompt}]), return_tensors="pt",
                  add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id)[0, ids.shape[1]:]
        finished = tok.eos_token_id in out.tolist()
        (kept.append((prompt, tok.decode(out, skip_special_tokens=True).strip())) if finished
         else dropped.append(prompt))
        print(f"\rgeneral replies {i}/{len(prompts)}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return kept, dropped


def write(out_dir=None, force=False):
    """Write the replay file into out_dir, else into every folder of FOLDERS; {name: path}."""
    paths = [check_output(Path(folder) / NAME, force) for folder in ([out_dir] if out_dir else FOLDERS)]
    offline_defaults()
    kept, dropped = replies(prompts())
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}]} for p, r in kept]
    for path in paths:
        write_jsonl(path, rows, force=force)
    print(f"{len(rows)} replies kept; {len(dropped)} dropped (not finished within {MAX_NEW_TOKENS} tokens)"
          + (": " + "; ".join(dropped) if dropped else ""))
    return {str(path): path for path in paths}


@cli
def main(argv=None):
    samples.main(sys.modules[__name__], None, write, argv)


if __name__ == "__main__":
    sys.exit(main())
