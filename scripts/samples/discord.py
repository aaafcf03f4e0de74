"""Discord persona sample data: a month of #the-galley in which Vex (Captain Vex) talks the way
people write on Discord: lower case, short, pirate and chat slang, an emoji now and then.

Writes, in recipes/tinyllama-discord-persona/data:
- galley_export.json: a DiscordChatExporter-style JSON export (compact) of the channel: the crew
  chat, ask Vex things, Vex answers (and now and then opens a conversation); a dice bot posts
  rolls (the converter drops bots);
- vex_heldout.jsonl: held-out exchanges (messages JSONL: a crew message, then Vex's reply) about
  topics that never come up in the export; their replies are the persona's own held-out messages
  that eval.style compares a model's replies against.
The lora-135m recipe trains on the export converted by data_tools.discord (see the README).
Deterministic: the same files byte for byte on every run.

  python -m scripts.samples.discord [--out recipes/tinyllama-discord-persona/data] [--force]
"""
import json
import random
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import ROOT
from common.errors import cli
from common.io import atomic_open, check_output
from scripts import samples
from scripts.samples import write_files

DATA = ROOT / "recipes" / "tinyllama-discord-persona" / "data"
CONVERSATIONS = 200  # in the export
HELDOUT = 60

CREW = [("marastorm", "Mara"), ("theo_b", "Theo"), ("priyaaa", "Priya"), ("junebug", "Jun"), ("samwise42", "Sam")]
VEX = ("captainvex", "Vex")
BOT = ("DiceBot", "DiceBot")
# Vex's words: eval.style counts them as slang beside the chat slang it knows
SLANG = ("arr", "aye", "ahoy", "yarr", "matey", "lad", "lass", "ye", "grog", "landlubber", "savvy", "booty",
         "scallywag", "plunder", "lol", "ngl", "tbh", "lmao", "fr")
EMOJI = ["🏴\u200d☠️", "⚓", "🦜", "🍺", "🌊", "😂", "☠️", "💰", "🗺️"]

# topics someone asks Vex about: (thing, kind); held-out topics never appear in the export
TOPICS = [
    ("pizza", "food"), ("sushi", "food"), ("tacos", "food"), ("pancakes", "food"), ("ramen", "food"),
    ("spicy wings", "food"), ("pineapple on pizza", "food"), ("cold brew", "drink"), ("green tea", "drink"),
    ("energy drinks", "drink"), ("lemonade", "drink"), ("hot chocolate", "drink"), ("chess", "game"),
    ("poker", "game"), ("monopoly", "game"), ("catan", "game"), ("mario kart", "game"), ("tetris", "game"),
    ("dungeons and dragons", "game"), ("minecraft", "game"), ("the new patch", "game"), ("speedruns", "game"),
    ("horror movies", "show"), ("anime", "show"), ("reality tv", "show"), ("the finale last night", "show"),
    ("documentaries", "show"), ("cats", "pet"), ("dogs", "pet"), ("hamsters", "pet"), ("goldfish", "pet"),
    ("jogging", "plan"), ("karaoke", "plan"), ("camping", "plan"), ("a road trip", "plan"), ("the gym", "plan"),
    ("a beach day", "plan"), ("bowling", "plan"), ("mondays", "life"), ("rainy weather", "life"),
    ("homework", "life"), ("taxes", "life"), ("waking up early", "life"), ("my new haircut", "life"),
    ("online dating", "life"), ("group projects", "life"), ("learning guitar", "hobby"), ("knitting", "hobby"),
    ("painting", "hobby"), ("gardening", "hobby"), ("baking bread", "hobby"), ("photography", "hobby"),
]
HELDOUT_TOPICS = [
    ("burritos", "food"), ("waffles", "food"), ("curry", "food"), ("iced coffee", "drink"),
    ("root beer", "drink"), ("checkers", "game"), ("uno", "game"), ("crossword puzzles", "game"),
    ("sitcoms", "show"), ("true crime podcasts", "show"), ("parrots", "pet"), ("rabbits", "pet"),
    ("hiking", "plan"), ("a picnic", "plan"), ("ice skating", "plan"), ("traffic jams", "life"),
    ("laundry day", "life"), ("job interviews", "life"), ("learning piano", "hobby"), ("pottery", "hobby"),
]
QUESTIONS = ["vex what do you think of {x}?", "vex do you like {x}", "captain, thoughts on {x}?",
             "@Vex {x} yes or no", "vex have you ever tried {x}", "is {x} overrated vex?",
             "vex be honest, {x}?", "anyone into {x}? vex?", "vex would you pick {x} or grog",
             "quick poll: {x}. vex?"]
HELDOUT_QUESTIONS = ["vex how do you feel about {x}", "captain vex, rate {x}", "vex, {x}: good or bad?",
                     "what would the captain say about {x}"]
OPEN = ["arr", "aye", "ahoy", "yarr", "har", "oi", "ha", "bah", "ooh"]
TAG = ["lad", "matey", "lass", "ye landlubber", "savvy?", "lol", "ngl", "tbh", "fr", "me hearty"]
LIKE = {  # what Vex says about a thing of each kind, {x} the thing
    "food": ["{x} is proper galley food", "i'd trade me best hat for {x}", "{x} tastes better at sea",
             "cook me {x} and ye can have the helm", "{x} with a side of grog, perfect"],
    "drink": ["{x} is no grog but it'll do", "{x}? only after the grog runs out", "pour me a barrel of {x}",
              "{x} keeps the crew awake on night watch"],
    "game": ["{x}? i plunder everyone at that", "i cheat at {x} and i'm proud", "{x} night on the ship, who's in",
             "lost me boots at {x} once"],
    "show": ["{x} put me to sleep faster than a calm sea", "watched {x} in the crow's nest", "{x} needs more krakens",
             "no spoilers on {x} or ye walk the plank"],
    "pet": ["{x} on a ship? they'd eat the biscuits", "me parrot says no to {x}", "{x} make fine deckhands",
            "{x} are crew, not cargo"],
    "plan": ["{x}? only if there's treasure at the end", "count me in for {x}", "{x} sounds like a mutiny waiting to happen",
             "i'll bring the map for {x}"],
    "life": ["{x} is worse than a leaky hull", "{x}? make the first mate handle it", "{x} can walk the plank",
             "survived {x} like i survived the kraken"],
    "hobby": ["{x} is how i pass the long voyages", "tried {x} once, the seagulls laughed", "{x} beats swabbing the deck",
              "me whole crew took up {x}"],
}
CHATTER = ["anyone around?", "ugh long day", "lol same", "brb getting snacks", "who's online", "hiii",
           "did everyone see the announcement", "ok back", "is it friday yet", "this channel is chaos",
           "morning all", "i need coffee", "game night soon?", "that meme was too good"]
FOLLOW_UPS = ["lmao", "ok fair", "why are you like this", "lol true", "classic vex", "😂😂", "noted captain",
              "wait really?", "that's the most vex answer ever"]
VEX_BACK = ["aye really", "a captain never lies, mostly", "ye love me for it", "har, ask the parrot",
            "that's me", "every word true, lad", "write it in the logbook"]
VEX_OPENERS = ["ahoy crew, who's up for game night", "arr the ship's biscuits are gone again, who did it",
               "ye scallywags awake?", "morning crew ⚓ any news from the harbor", "grog's on me tonight, lol"]


def vex_line(rng, thing, kind):
    """One reply of Vex's: lower case, a slang opener or tag, a take on the thing, sometimes an emoji."""
    parts = []
    if rng.random() < 0.6:
        parts.append(rng.choice(OPEN) + ("," if rng.random() < 0.5 else ""))
    parts.append(rng.choice(LIKE[kind]).format(x=thing))
    if rng.random() < 0.5:
        parts[-1] += ","
        parts.append(rng.choice(TAG))
    if rng.random() < 0.55:
        parts.append(rng.choice(EMOJI))
    return " ".join(parts)


def conversation(rng, thing, kind):
    """[(author, text)]: maybe crew chatter, a question to Vex, her reply, maybe a follow-up."""
    crew = rng.sample(CREW, 2)
    lines = [(crew[0], rng.choice(CHATTER))] if rng.random() < 0.5 else []
    if rng.random() < 0.1:
        lines.append((BOT, f"🎲 {crew[0][1]} rolled {rng.randint(1, 20)}"))
    lines.append((crew[1], rng.choice(QUESTIONS).format(x=thing)))
    lines.append((VEX, vex_line(rng, thing, kind)))
    if rng.random() < 0.35:
        lines.append((crew[0], rng.choice(FOLLOW_UPS)))
        lines.append((VEX, rng.choice(VEX_BACK) + (" " + rng.choice(EMOJI) if rng.random() < 0.5 else "")))
    return lines


def message(n, when, author, text):
    (name, nick), bot = author, author == BOT
    return {"id": str(1213184526545715214 + n), "type": "Default", "timestamp": when.isoformat(timespec="milliseconds"),
            "content": text, "author": {"id": str(413265611980931080 + CREW.index(author) if author in CREW else
                                                      (900000000000000001 if bot else 700000000000000007)),
                                        "name": name, "nickname": nick, "isBot": bot}}


def export(seed=7):
    """The channel export: conversations 40-180 minutes apart, messages 20-90 s apart."""
    rng = random.Random(seed)
    when = datetime(2024, 3, 1, 17, 0, tzinfo=timezone.utc)
    messages = []
    for i in range(CONVERSATIONS):
        when += timedelta(minutes=rng.randint(40, 180))
        if i % 25 == 7:
            lines = [(VEX, rng.choice(VEX_OPENERS)), (rng.choice(CREW), rng.choice(FOLLOW_UPS))]
        else:
            lines = conversation(rng, *TOPICS[i % len(TOPICS)])
        for author, text in lines:
            when += timedelta(seconds=rng.randint(20, 90))
            messages.append(message(len(messages), when, author, text))
    return {"guild": {"id": "985258124116099073", "name": "The Salty Dice Tavern"},
            "channel": {"id": "985258535157891074", "type": "GuildTextChat", "name": "the-galley"},
            "messageCount": len(messages), "messages": messages}


def heldout(seed=11):
    rng = random.Random(seed)
    rows = []
    for i in range(HELDOUT):
        thing, kind = HELDOUT_TOPICS[i % len(HELDOUT_TOPICS)]
        question = HELDOUT_QUESTIONS[(i // len(HELDOUT_TOPICS) + i) % len(HELDOUT_QUESTIONS)].format(x=thing)
        rows.append({"messages": [{"role": "user", "content": question},
                                  {"role": "assistant", "content": vex_line(rng, thing, kind)}]})
    return rows


def write(out_dir=DATA, force=False):
    path = check_output(Path(out_dir) / "galley_export.json", force)
    paths = write_files({"vex_heldout.jsonl": heldout()}, out_dir, force)
    with atomic_open(path, force=force) as fh:  # one message per line: small diffs, easy to read
        data = export()
        head = json.dumps({k: v for k, v in data.items() if k != "messages"}, ensure_ascii=False)[:-1]
        fh.write(head + ', "messages": [\n')
        fh.write(",\n".join(json.dumps(m, ensure_ascii=False) for m in data["messages"]))
        fh.write("\n]}\n")
    return {"galley_export.json": path, **paths}


@cli
def main(argv=None):
    samples.main(sys.modules[__name__], DATA, write, argv)


if __name__ == "__main__":
    sys.exit(main())
