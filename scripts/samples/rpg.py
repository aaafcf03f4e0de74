"""RPG task sample data: game-master tasks answered with only the result, in five task families.

Families: status effects (a description -> the status name in capitals), loot lines (fields -> the
item|rarity|gold line), dice (a roll -> its die type), damage type (a hit -> its damage type in
lowercase) and quest state as JSON. Each is a rule the model applies to new cases. Arithmetic and
comparisons are left out: a 135M model does not learn them from a few hundred examples (tried, 1 epoch:
HIT/MISS from roll vs AC stayed at chance, gold = level x 20 at 0 of 12, the kept die of advantage or
disadvantage at 42-67%).

Splits keep cases apart, so the held-out score measures the rule, not memory:
  rpg_train.jsonl    290 tasks (60 a family; 50 status tasks: each sentence once)
  rpg_val.jsonl      40 tasks: the val loss during training
  rpg_heldout.jsonl  60 tasks: the final metric (exact match)
Status sentences, creatures, loot items, dice uses and quest names of val and held-out tasks never
occur in training, and their attack names are no training attack's. Deterministic: the same files byte for byte on every run.

  python -m scripts.samples.rpg [--out recipes/tinyllama-rpg/data] [--force]
"""
import json
import random
import sys

from common import ROOT
from common.errors import cli
from scripts import samples
from scripts.samples import write_splits

SPLITS = ("train", "val", "heldout")
SIZES = {"train": 60, "val": 8, "heldout": 12}  # tasks per family and split

# status -> seven descriptions (five for training, one for val, one held out); each names the effect
STATUS = {
    "POISONED": ["Snake poison makes {c} sick.", "{c} is weak from poison.",
                 "{c} is poisoned by a spider bite.", "Poison from the dart spreads through {c}.",
                 "{c} drank a poisoned potion.", "{c} feels the poison of the wyvern's sting.",
                 "A poisoned blade cut {c}."],
    "STUNNED": ["{c} is stunned and cannot act.", "A hammer blow stuns {c}.",
                 "{c} is stunned by a thunderclap.", "The shield bash leaves {c} stunned.",
                "{c} stands stunned after the psychic shriek.", "A stunning blow hits {c}.",
                "The monk's strike stuns {c}."],
    "ASLEEP": ["{c} is fast asleep.", "A magic mist puts {c} to sleep.",
                 "{c} falls asleep from a lullaby.", "The sleep spell puts {c} to sleep.",
               "{c} is asleep on the floor.", "A sleeping dust makes {c} fall asleep.",
               "{c} drifts asleep under the enchantment."],
    "FRIGHTENED": ["{c} is frightened and runs away.", "The ghost frightens {c}.",
                 "{c} is frightened by the dragon.", "The spectre frightens {c}.",
                   "{c} cowers, frightened of the lich.", "The banshee's wail leaves {c} frightened.",
                   "A frightening roar scares {c}."],
    "PARALYZED": ["{c} is paralyzed by the venom.", "A wand of paralysis leaves {c} paralyzed.",
                 "{c} is paralyzed by the hold spell.", "The ghoul's claws paralyze {c}.",
                  "Paralyzing gas leaves {c} unable to move.", "{c} is paralyzed by the crawler's tentacles.",
                  "A paralysis curse freezes {c} in place."],
    "BLINDED": ["{c} is blinded by smoke.", "A blinding flash hits {c}.",
                 "{c} is blinded by a flash of light.", "Sand blinds {c}.", "The spell blinds {c}.",
                "Pixie dust leaves {c} blinded.", "A blinding curse strikes {c}."],
    "CHARMED": ["{c} is charmed by the bard.", "A charming smile leaves {c} charmed.",
                 "{c} is charmed by the enchanter.", "The vampire's gaze charms {c}.",
                "The siren's song leaves {c} charmed.", "A charm spell makes {c} friendly to the rogue.",
                "{c} is charmed by a fey glamour."],
    "PRONE": ["{c} is knocked prone by a kick.", "{c} slips on ice and falls prone.",
                 "{c} is knocked prone by the club.", "{c} trips and falls prone.",
              "The grease spell leaves {c} prone.", "A shove knocks {c} prone.",
              "{c} lies prone after the tidal wave."],
    "BURNING": ["{c} is burning after the fireball.", "Flaming oil leaves {c} burning.",
                 "{c} is burning from the fire bolt.", "Oil on {c} catches fire and burns.",
                "{c} runs around with its cloak burning.", "The dragon's breath leaves {c} burning.",
                "Alchemist's fire sets {c} burning."],
    "INVISIBLE": ["{c} is invisible after the spell.", "A cloak makes {c} invisible.",
                 "{c} drinks a potion and turns invisible.", "The spell makes {c} invisible.",
                  "{c} becomes invisible to every eye.", "The ring turns {c} invisible.",
                  "{c} fades and is invisible now."],
}
STATUS_ASK = "Which status effect is this? Answer with the status name in capitals."
CREATURES = {"train": ["the goblin", "the orc", "the knight", "the troll", "the bandit", "the cultist", "the wolf",
                       "the paladin", "the kobold", "the mage", "the hobgoblin", "the gnoll"],
             "val": ["the centaur", "the minotaur"], "heldout": ["the dire wolf", "the ogre", "the wight", "the harpy"]}

ITEMS = {"train": ["longsword", "oak shield", "silver ring", "healing potion", "leather boots", "iron helm",
                   "war axe", "bone dagger", "wizard hat", "elven cloak", "spear", "crossbow", "ruby amulet",
                   "copper bracers", "ash staff", "hunting bow", "steel gauntlets", "jade idol", "tome of lore",
                   "fur mantle", "glass orb", "chain mail", "rope of climbing", "mace"],
         "val": ["lantern of truth", "obsidian knife", "scale armor"],
         "heldout": ["chain shirt", "moonstone circlet", "frost brand", "battle hammer", "owl feather",
                     "bronze key", "dragon scale", "silk gloves"]}
RARITIES = ["common", "uncommon", "rare", "epic"]
LOOT_ASK = "Write the loot line for: {item}, {rarity}, {gold} gold. Format <item>|<rarity>|<gold>."

DICE_ASK = "{name} rolls {n}d{sides}{bonus} for the {what}. Which die type is rolled? Answer like d6."
DICE_USES = {"train": ["attack", "damage", "fireball", "healing spell", "initiative", "trap", "sneak attack"],
             "val": ["saving throw"], "heldout": ["perception check", "stealth check"]}
HEROES = ["Bram", "Sela", "Mirelle", "Oswin", "Tarek", "Ysolde", "Kael", "Nim"]

DAMAGE_TYPES = ["fire", "cold", "lightning", "poison", "acid", "necrotic", "radiant", "thunder", "psychic", "force"]
ATTACKS = {"train": ["bolt", "blast", "ray", "wave", "burst", "arrow", "touch"], "val": ["lance"],
           "heldout": ["storm", "orb"]}
DAMAGE_ASK = "{name}'s {kind} {attack} hits {target} for {amount} {kind} damage. Which damage type? Answer in lowercase."
TARGETS = ["a skeleton", "a goblin", "a bugbear", "a zombie", "an orc", "a giant rat"]

QUESTS = {"train": ["Hollow Oak", "Silver Creek", "Iron Gate", "Broken Tower", "Misty Vale", "Red Harbor",
                    "Old Mill", "Stone Bridge", "Dark Forest", "Golden Field", "Frozen Lake", "Sunken Temple",
                    "Wolf Den", "Crystal Cave", "Raven Hill", "Ember Forge"],
          "val": ["Amber Road", "Salt Marsh"],
          "heldout": ["Thorn Keep", "Willow Ford", "Copper Mine", "Shadow Pass", "Bright Meadow", "Eagle Peak"]}
QUEST_STATES = {
    "not_started": ["Nobody has picked up the {q} quest yet.", "The {q} quest is still waiting on the notice board.",
                    "No hero has accepted the {q} quest so far."],
    "active": ["The party accepted the {q} quest and is on its way.", "The heroes are in the middle of the {q} quest.",
               "The {q} quest has begun and is under way."],
    "completed": ["The party finished the {q} quest and got the reward.", "The {q} quest is done: the heroes succeeded.",
                  "The heroes completed the {q} quest yesterday."],
    "failed": ["The party gave up on the {q} quest after the villain escaped.", "The {q} quest failed: the hostage was lost.",
               "Time ran out and the {q} quest could not be finished."],
}
QUEST_ASK = "Output the quest state as JSON with keys quest (snake_case) and state."


def _status(rng, split):
    """Training uses each (status, sentence) once: the same sentence with another creature would be a
    near duplicate (data_tools.filter drops those)."""
    index = {"train": [0, 1, 2, 3, 4], "val": [5], "heldout": [6]}[split]
    cases = [(s, ds[i], rng.choice(CREATURES[split])) for s, ds in STATUS.items() for i in index]
    if split != "train":
        cases = [(s, d, c) for s, d, _ in cases for c in CREATURES[split]]
    rng.shuffle(cases)
    for status, desc, creature in cases[:SIZES[split]]:
        text = desc.format(c=creature)
        yield {"task": f"{text[0].upper()}{text[1:]} {STATUS_ASK}", "output": status}


def _loot(rng, split):
    cases = [(item, rarity) for item in ITEMS[split] for rarity in RARITIES]
    rng.shuffle(cases)
    for item, rarity in cases[:SIZES[split]]:
        gold = rng.randrange(1, 60) * 5
        yield {"task": LOOT_ASK.format(item=item, rarity=rarity, gold=gold), "output": f"{item}|{rarity}|{gold}"}


def _dice(rng, split):
    cases = [(n, sides, what) for n in range(1, 9) for sides in (4, 6, 8, 10, 12, 20) for what in DICE_USES[split]]
    rng.shuffle(cases)
    for n, sides, what in cases[:SIZES[split]]:
        bonus = rng.choice(["", f"+{rng.randrange(1, 6)}", f"-{rng.randrange(1, 3)}"])
        yield {"task": DICE_ASK.format(name=rng.choice(HEROES), n=n, sides=sides, bonus=bonus, what=what),
               "output": f"d{sides}"}


def _damage(rng, split):
    cases = [(kind, attack) for kind in DAMAGE_TYPES for attack in ATTACKS[split]]
    rng.shuffle(cases)
    for kind, attack in (cases * 2)[:SIZES[split]]:
        yield {"task": DAMAGE_ASK.format(name=rng.choice(HEROES), kind=kind, attack=attack, target=rng.choice(TARGETS),
                                         amount=rng.randrange(2, 30)), "output": kind}


def _quest(rng, split):
    cases = [(q, state, t) for q in QUESTS[split] for state, ts in QUEST_STATES.items() for t in ts]
    rng.shuffle(cases)
    for quest, state, template in cases[:SIZES[split]]:
        key = quest.lower().replace(" ", "_")
        yield {"task": f"{template.format(q=quest)} {QUEST_ASK}",
               "output": json.dumps({"quest": key, "state": state})}


def records():
    """{split: [record]}: each family's tasks for the split, interleaved family by family."""
    rng = random.Random(7)
    out = {}
    for split in SPLITS:
        families = [list(_status(rng, split)), list(_loot(rng, split)), list(_dice(rng, split)),
                    list(_damage(rng, split)), list(_quest(rng, split))]
        assert len(families[0]) == min(SIZES[split], 50) and all(len(f) == SIZES[split] for f in families[1:]), split
        out[split] = [f[i] for i in range(SIZES[split]) for f in families if i < len(f)]
    return out


def write(out_dir, force=False):
    return write_splits(records(), "rpg", out_dir, force)


@cli
def main(argv=None):
    samples.main(sys.modules[__name__], ROOT / "recipes" / "tinyllama-rpg" / "data", write, argv)


if __name__ == "__main__":
    main()
