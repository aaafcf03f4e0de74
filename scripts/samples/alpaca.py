"""Alpaca sample data: short instructions with one right answer, in Stanford Alpaca's record format.

Writes recipes/tinyllama-alpaca/data/instructions_{train,heldout}.jsonl ({"instruction", "input",
"output"}; "input" empty where the instruction says everything). Eight task families, each asked
in several wordings: past tense, plural, opposite word, yes/no question, title case, date to
ISO 8601, year from a sentence, list to a comma-separated line. The held-out split uses words,
sentences, dates and lists that never occur in training (tests check), so a model that scores
there has learned the task, not the answers. The lora-135m recipe trains on the train split in
Axolotl's Alpaca prompt; eval scores ROUGE-L on the held-out split in the same prompt.
Deterministic: the same files byte for byte on every run.

  python -m scripts.samples.alpaca [--out recipes/tinyllama-alpaca/data] [--force]
"""
import random
import sys

from common import ROOT
from common.errors import cli
from scripts import samples
from scripts.samples import write_splits

DATA = ROOT / "recipes" / "tinyllama-alpaca" / "data"
SPLITS = {"train": 200, "heldout": 64}

SUBJECTS = ["The baker", "My neighbor", "Our coach", "The pilot", "Her brother", "The gardener", "A student",
            "The mayor", "His aunt", "The farmer", "The nurse", "Our teacher", "The captain", "My cousin"]
VERBS = [("walks", "walked", "to the station"), ("paints", "painted", "the fence"), ("writes", "wrote", "a letter"),
         ("bakes", "baked", "fresh bread"), ("drives", "drove", "to work"), ("reads", "read", "the newspaper"),
         ("sings", "sang", "in the choir"), ("cleans", "cleaned", "the kitchen"), ("buys", "bought", "new shoes"),
         ("fixes", "fixed", "the bicycle"), ("teaches", "taught", "a history class"), ("catches", "caught", "the bus"),
         ("plants", "planted", "tomatoes"), ("visits", "visited", "the museum"), ("builds", "built", "a shed"),
         ("finds", "found", "the keys"), ("calls", "called", "the doctor"), ("brings", "brought", "a cake"),
         ("opens", "opened", "the window"), ("eats", "ate", "an apple"), ("wins", "won", "the race"),
         ("carries", "carried", "the boxes"), ("sells", "sold", "the old car"), ("washes", "washed", "the dishes"),
         ("feeds", "fed", "the cat"), ("watches", "watched", "the game"), ("draws", "drew", "a map"),
         ("orders", "ordered", "a pizza"), ("loses", "lost", "the umbrella"), ("climbs", "climbed", "the hill")]
PLURALS = [("cat", "cats"), ("box", "boxes"), ("city", "cities"), ("child", "children"), ("mouse", "mice"),
           ("knife", "knives"), ("tooth", "teeth"), ("bus", "buses"), ("baby", "babies"), ("leaf", "leaves"),
           ("man", "men"), ("dish", "dishes"), ("story", "stories"), ("foot", "feet"), ("wolf", "wolves"),
           ("goose", "geese"), ("church", "churches"), ("party", "parties"), ("woman", "women"), ("glass", "glasses"),
           ("puppy", "puppies"), ("shelf", "shelves"), ("person", "people"), ("brush", "brushes"), ("lady", "ladies"),
           ("wife", "wives"), ("fox", "foxes"), ("berry", "berries"), ("loaf", "loaves"), ("watch", "watches"),
           ("half", "halves"), ("country", "countries")]
OPPOSITES = [("hot", "cold"), ("tall", "short"), ("early", "late"), ("happy", "sad"), ("open", "closed"),
             ("heavy", "light"), ("fast", "slow"), ("rich", "poor"), ("wet", "dry"), ("empty", "full"),
             ("strong", "weak"), ("cheap", "expensive"), ("loud", "quiet"), ("young", "old"), ("easy", "difficult"),
             ("dark", "bright"), ("thick", "thin"), ("hard", "soft"), ("clean", "dirty"), ("deep", "shallow"),
             ("safe", "dangerous"), ("wide", "narrow"), ("sweet", "sour"), ("brave", "cowardly"), ("first", "last"),
             ("inside", "outside"), ("win", "lose"), ("buy", "sell"), ("remember", "forget"), ("arrive", "leave"),
             ("push", "pull"), ("accept", "refuse")]
THINGS = [("store", "open"), ("soup", "hot"), ("train", "late"), ("door", "locked"), ("sky", "clear"),
          ("bridge", "closed"), ("meeting", "over"), ("milk", "fresh"), ("printer", "broken"), ("road", "icy"),
          ("museum", "free"), ("river", "deep"), ("movie", "long"), ("test", "easy"), ("room", "empty"),
          ("coffee", "ready"), ("garden", "quiet"), ("ticket", "valid"), ("lake", "frozen"), ("shop", "busy"),
          ("answer", "correct"), ("oven", "warm"), ("package", "heavy"), ("hotel", "full"), ("trail", "steep"),
          ("phone", "charged"), ("plan", "risky"), ("dog", "hungry"), ("window", "open"), ("car", "new")]
TITLES = ["the quiet harbor", "a walk in the rain", "notes from a small kitchen", "the last train home",
          "secrets of the old mill", "a guide to winter birds", "the lighthouse keeper", "cooking with five spices",
          "letters to my sister", "the map of lost islands", "how the river bends", "a year of small gardens",
          "the clockmaker's daughter", "songs for a long road", "the girl who counted stars", "under the copper moon",
          "a history of bread", "the summer of red kites", "stories from the valley", "the art of slow travel",
          "the bridge at dawn", "a field guide to clouds", "the forgotten orchard", "tales of the north wind",
          "the baker's apprentice", "a house by the sea", "the silver key", "learning to sail",
          "the night market", "voices in the attic", "the paper garden", "a room full of maps"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
EVENTS = ["The bridge opened in {y} after years of delay.", "She moved to Lisbon in {y} to study music.",
          "The library was rebuilt in {y} after the fire.", "Their first album came out in {y}.",
          "The treaty was signed in {y} by both countries.", "In {y} the town got its first railway station.",
          "The company was founded in {y} in a small garage.", "He ran his first marathon in {y}.",
          "The comet was last seen in {y}.", "The school celebrated its centenary in {y}."]
ITEMS = ["apples", "pears", "plums", "milk", "eggs", "bread", "rice", "salt", "tea", "honey", "beans", "onions",
         "lemons", "butter", "flour", "cheese", "carrots", "garlic", "pepper", "oats", "sugar", "grapes", "jam",
         "nuts", "soap", "candles", "stamps", "paper", "glue", "pencils", "tape", "string"]

FAMILIES = {  # family -> wordings of the instruction
    "past": ["Rewrite the sentence in the past tense.", "Change the sentence to the past tense.",
             "Put this sentence into the simple past."],
    "plural": ["Give the plural form of the noun.", "What is the plural of this word?", "Write the noun in the plural."],
    "opposite": ["Give the opposite of the word.", "Write an antonym of this word.", "What is the opposite of this word?"],
    "question": ["Turn the statement into a yes/no question.", "Rewrite the sentence as a yes/no question.",
                 "Make this statement a question that can be answered with yes or no."],
    "title": ["Write the title in title case.", "Capitalize every word of the title.",
              "Format this book title with each word capitalized."],
    "date": ["Write the date in the format YYYY-MM-DD.", "Convert the date to ISO 8601 (YYYY-MM-DD).",
             "Reformat the date as year-month-day with digits."],
    "year": ["Extract the year from the sentence.", "In which year did this happen? Answer with the year only.",
             "Find the year mentioned in the sentence."],
    "list": ["Convert the list into a single comma-separated line.", "Join the list items with commas.",
             "Rewrite the list as one line, items separated by commas."],
}


def _split(pool, rng, heldout_share=0.25):
    """(train, heldout) halves of a shuffled copy of pool."""
    items = list(pool)
    rng.shuffle(items)
    cut = max(1, round(len(items) * heldout_share))
    return items[cut:], items[:cut]


def task(family, split, pools, rng):
    """(input, output) of one task of the family from the split's share of the entities."""
    pool = pools[family][split]
    if family == "past":
        subject, (present, past, rest) = rng.choice(SUBJECTS), rng.choice(pool)
        return f"{subject} {present} {rest}.", f"{subject} {past} {rest}."
    if family in ("plural", "opposite"):
        word, answer = rng.choice(pool)
        return word, answer
    if family == "question":
        thing, state = rng.choice(pool)
        return f"The {thing} is {state}.", f"Is the {thing} {state}?"
    if family == "title":
        title = rng.choice(pool)
        return title, " ".join(w.capitalize() for w in title.split())
    if family == "date":
        year, month, day = rng.choice(pool)
        return f"{MONTHS[month - 1]} {day}, {year}", f"{year:04d}-{month:02d}-{day:02d}"
    if family == "year":
        template, year = rng.choice(pool)
        return template.format(y=year), str(year)
    items = rng.sample(pool, rng.randint(3, 5))
    return "\n".join(f"- {item}" for item in items), ", ".join(items)


def pools(rng):
    """family -> {"train": entities, "heldout": entities}: no entity in both."""
    dates = [(y, m, d) for y, m, d in zip(rng.sample(range(1950, 2030), 60), [rng.randint(1, 12) for _ in range(60)],
                                          [rng.randint(1, 28) for _ in range(60)])]
    years = [(t, y) for t, y in zip([EVENTS[i % len(EVENTS)] for i in range(60)], rng.sample(range(1800, 2025), 60))]
    out = {}
    for family, pool in {"past": VERBS, "plural": PLURALS, "opposite": OPPOSITES, "question": THINGS,
                         "title": TITLES, "date": dates, "year": years, "list": ITEMS}.items():
        train, heldout = _split(pool, rng, 0.4 if family == "list" else 0.25)
        out[family] = {"train": train, "heldout": heldout}
    return out


def rows(seed=5):
    rng = random.Random(seed)
    entity_pools = pools(rng)
    out = {}
    for split, count in SPLITS.items():
        split_rows, seen = [], set()
        families = list(FAMILIES)
        while len(split_rows) < count:
            family = families[len(split_rows) % len(families)]
            instruction = rng.choice(FAMILIES[family])
            given, answer = task(family, split, entity_pools, rng)
            if (instruction, given) in seen:
                continue
            seen.add((instruction, given))
            split_rows.append({"instruction": instruction, "input": given, "output": answer})
        out[split] = split_rows
    return out


def write(out_dir=DATA, force=False):
    return write_splits(rows(), "instructions", out_dir, force)


@cli
def main(argv=None):
    samples.main(sys.modules[__name__], DATA, write, argv)


if __name__ == "__main__":
    sys.exit(main())
