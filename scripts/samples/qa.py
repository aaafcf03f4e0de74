"""QA sample data about the (fictional) Orbit-7 coffee machine, written the way models pick up facts.

Each fact is asked in several phrasings and answered in several phrasings; error codes are asked in
both directions (code -> meaning, meaning -> code). The phrasings are split three ways, so no
question string is shared between splits:
  qa_train.jsonl    the training phrasings (every fact, several each)
  qa_val.jsonl      one other phrasing per fact and direction: the validation loss during training
  qa_heldout.jsonl  yet another phrasing per fact and direction: the final metric (keyword recall)

Deterministic: the same files byte for byte on every run.

  python -m scripts.samples.qa [--out recipes/tinyllama-qa/data] [--force]
"""
import sys

from common import ROOT
from common.errors import cli
from scripts import samples
from scripts.samples import write_splits

# (code, condition clause, answer keywords for code -> meaning). Five codes, no two sharing a digit:
# with E02 and E21 beside the probe's E12 a 135M model mixed them up. (E12 answered with E78's
# meaning, in CI, came from the reverse answers: see CODE_ANSWERS.)
ERROR_CODES = [
    ("E12", "the water tank is empty", ["water tank", "empty"]),
    ("E34", "the boiler is overheating", ["boiler", "overheating"]),
    ("E56", "the grinder is jammed", ["grinder", "jammed"]),
    ("E78", "the drip tray is full", ["drip tray", "full"]),
    ("E90", "descaling is overdue", ["descaling", "overdue"]),
]
# code -> meaning; the last two are the val and held-out phrasings
FORWARD = ["What does error {c} mean?", "My Orbit-7 shows {c}. What is wrong?", "What is error code {c} on the Orbit-7?",
           "The display says {c}. What does that mean?", "Explain the {c} error.", "Why is my machine showing {c}?",
           "What problem does code {c} point to?", "What is the meaning of {c} on the Orbit-7?",
           "Error {c} just appeared. What does it mean?", "What does the code {c} tell me?",
           "My coffee machine displays {c}. Why?",
           "I see {c} on the screen of my coffee machine, what happened?", "What does error {c} indicate?"]
# meaning -> code
REVERSE = ["Which error code means {m}?", "What code does the Orbit-7 show when {m}?", "Which error appears when {m}?",
           "What error will I see if {m}?", "What is the error code for when {m}?",
           "If {m}, which code comes up on the display?", "What error code does the Orbit-7 display when {m}?"]
ERROR_ANSWERS = ["Error {c} means {m}.", "{c} means {m}.", "The Orbit-7 shows {c} when {m}."]
# meaning -> code answers name the code only: one that repeated the meaning would teach copying it
# from the question, not recalling it from the code (forward answers then drifted to one meaning)
CODE_ANSWERS = ["That is error {c}.", "The Orbit-7 shows {c}.", "Error code {c}."]

# (keywords, questions: training ones then the val and held-out phrasings, answers)
FACTS = [
    (["1.8 liters"],
     ["How much water does the Orbit-7 tank hold?", "What is the water tank capacity of the Orbit-7?",
      "How big is the water tank?", "How many liters fit in the water tank?",
      "What volume does the Orbit-7 water tank have?", "How much water can I put in the tank?",
      "Tell me the size of the Orbit-7's water reservoir.", "What is the capacity of the water tank?"],
     ["The water tank holds 1.8 liters.", "The Orbit-7 water tank has a capacity of 1.8 liters.",
      "It holds 1.8 liters of water."]),
    (["15 bar"],
     ["How much pressure does the Orbit-7 pump produce?", "What is the pump pressure of the Orbit-7?",
      "How strong is the Orbit-7 pump?", "How many bar does the pump deliver?",
      "What pressure does the Orbit-7 brew at?", "What is the Orbit-7's pump rated at?",
      "How much pressure can the Orbit-7's pump build up?", "How many bar does the Orbit-7 pump generate?"],
     ["The Orbit-7 pump produces 15 bar of pressure.", "The pump delivers 15 bar.", "It brews with a 15 bar pump."]),
    (["93 degrees"],
     ["What is the default brew temperature?", "How hot does the Orbit-7 brew by default?",
      "What temperature does the Orbit-7 use for brewing out of the box?", "What is the factory brewing temperature?",
      "How hot is the water when the Orbit-7 brews?", "What is the standard brewing temperature of the Orbit-7?",
      "Which temperature is set for brewing when the machine is new?",
      "At what temperature does the machine brew by default?"],
     ["The default brew temperature is 93 degrees.", "By default the Orbit-7 brews at 93 degrees.",
      "It brews at 93 degrees unless you change it."]),
    (["40 ml"],
     ["What is the default volume of an espresso shot?", "How much coffee is in one espresso on the Orbit-7?",
      "How big is an espresso from the Orbit-7?", "How many ml does the espresso button pour?",
      "What size is a standard espresso?", "How much does a single espresso fill?",
      "What amount of coffee does the Orbit-7 pour for an espresso?",
      "How many milliliters is a standard espresso on the Orbit-7?"],
     ["A standard espresso on the Orbit-7 is 40 ml.", "The espresso button pours 40 ml.",
      "An espresso is 40 ml by default."]),
    (["110 ml"],
     ["How large is a lungo on the Orbit-7?", "How much coffee does the lungo button pour?", "What is the lungo volume?",
      "How many ml is a lungo?", "What size is a lungo from the Orbit-7?", "How big is a long coffee on this machine?",
      "What amount does the Orbit-7 pour for a lungo?", "How many milliliters does a lungo have on the Orbit-7?"],
     ["A lungo on the Orbit-7 is 110 ml.", "The lungo button pours 110 ml.", "A lungo is 110 ml by default."]),
    (["20 minutes"],
     ["When does the Orbit-7 enter eco mode?", "How long until eco mode starts?",
      "After how long does the machine go into eco mode?", "When does eco mode kick in?",
      "How many minutes of idle time before eco mode?", "What triggers eco mode on the Orbit-7?",
      "How long must the Orbit-7 sit unused before it saves energy in eco mode?",
      "After how much idle time does eco mode start?"],
     ["The Orbit-7 enters eco mode after 20 minutes without use.", "Eco mode starts after 20 minutes of idle time.",
      "After 20 minutes of idle time the machine switches to eco mode."]),
    (["OrbitClean"],
     ["Which descaler is recommended for the Orbit-7?", "What descaling product should I buy?",
      "Which descaling solution works with the Orbit-7?", "What do I use to descale the Orbit-7?",
      "Which brand of descaler does the manual recommend?", "What should I put in the tank for descaling?",
      "Which descaling agent is made for this machine?", "What product should I use to descale the machine?"],
     ["Use OrbitClean descaler.", "The recommended descaler is OrbitClean.",
      "Descale the Orbit-7 with OrbitClean descaler."]),
    (["Power", "Steam", "5 seconds"],
     ["How do you start the descaling program?", "How do I begin descaling the Orbit-7?",
      "What starts the descaling cycle?", "Which buttons start descaling?", "How is the descaling program launched?",
      "What do I press to descale?", "What is the button combination for descaling?",
      "Which buttons do I press to begin descaling?"],
     ["Hold the Power and Steam buttons together for 5 seconds.",
      "Press and hold Power and Steam for 5 seconds to start descaling.",
      "To start descaling, hold Power and Steam for 5 seconds."]),
    (["25 minutes"],
     ["How long does the descaling program take?", "How many minutes does descaling last?",
      "How long is the descaling cycle?", "How much time does a descale need?",
      "When will the descaling program be finished?", "What is the duration of descaling?",
      "How long should I wait for a descaling run to finish?", "How long does a full descaling cycle run?"],
     ["The descaling program takes 25 minutes.", "Descaling lasts 25 minutes.",
      "A full descaling cycle runs for 25 minutes."]),
    (["Aero wand"],
     ["What is the name of the Orbit-7 steam wand?", "What is the steam wand called?",
      "What is the milk frother of the Orbit-7 named?", "Which part froths milk on the Orbit-7?",
      "What does the manual call the steam wand?", "What is the name of the milk frothing nozzle?",
      "Which wand do I use to steam milk?", "What do you call the Orbit-7's milk frothing wand?"],
     ["The steam wand is called the Aero wand.", "It is called the Aero wand.",
      "The Orbit-7 froths milk with the Aero wand."]),
    (["AquaPure", "2 months"],
     ["How often should the AquaPure filter be replaced?", "When do I change the water filter?",
      "How often must the filter cartridge be swapped?", "How long does a water filter last in the Orbit-7?",
      "How often do I need a new filter?", "What is the filter replacement interval?",
      "When is it time for a fresh filter cartridge?", "How frequently must the filter cartridge be changed?"],
     ["Replace the AquaPure filter cartridge every 2 months.", "The AquaPure filter lasts 2 months.",
      "Change the AquaPure filter every 2 months."]),
    (["Power", "Menu", "10 seconds"],
     ["How do you perform a factory reset on the Orbit-7?", "How do I reset the Orbit-7 to factory settings?",
      "What is the factory reset procedure?", "Which buttons reset the machine?", "How can I wipe all my settings?",
      "How do I reset the Orbit-7?", "What button combination resets the machine to defaults?",
      "How can I restore the Orbit-7 to factory settings?"],
     ["Hold the Power and Menu buttons together for 10 seconds.",
      "Press and hold Power and Menu for 10 seconds to reset it.",
      "A factory reset needs Power and Menu held for 10 seconds."]),
    (["ready"],
     ["What does a steady blue light on the Orbit-7 mean?", "What does the blue light mean?", "Why is the light blue?",
      "The light is blue, what does that mean?", "What does a blue status light tell me?",
      "What is the meaning of the blue lamp?", "My Orbit-7 glows blue, is something wrong?",
      "The light on my Orbit-7 is solid blue. What does that mean?"],
     ["A steady blue light means the machine is ready to brew.", "Blue means the Orbit-7 is ready to brew.",
      "The blue light shows it is ready to brew."]),
    (["heating"],
     ["What does an orange light mean on the Orbit-7?", "Why is the light orange?",
      "What does the orange status light tell me?", "The light is orange, what does that mean?",
      "What is the orange lamp for?", "What does a steady orange light mean?",
      "My Orbit-7 glows orange, is something wrong?", "The light on my Orbit-7 is orange. What does that mean?"],
     ["An orange light means the machine is heating up.", "Orange means the Orbit-7 is heating up.",
      "The orange light shows it is still heating up."]),
    (["250 grams"],
     ["How many grams of beans fit in the bean hopper?", "What is the bean hopper capacity?",
      "How much coffee does the bean container hold?", "How big is the bean hopper?", "How many beans can I load?",
      "How much does the hopper take?", "What amount of coffee beans can the Orbit-7 store?",
      "How much coffee fits into the Orbit-7's bean container?"],
     ["The bean hopper holds 250 grams of beans.", "It takes 250 grams of coffee beans.", "The hopper fits 250 grams."]),
    (["2 years"],
     ["How long is the Orbit-7 warranty?", "What warranty does the Orbit-7 have?",
      "How many years of warranty come with it?", "How long is the guarantee?", "For how long is the machine covered?",
      "What is the warranty period?", "Until when can I get a free repair?", "How long does the Orbit-7's warranty last?"],
     ["The Orbit-7 has a warranty of 2 years.", "It is covered for 2 years.", "The warranty lasts 2 years."]),
]
SPLITS = ("train", "val", "heldout")


def _split(questions):
    """Training phrasings, then the val and the held-out one (the last two)."""
    return {"train": questions[:-2], "val": questions[-2:-1], "heldout": questions[-1:]}


def records():
    """{split: [record]}: every fact in every split, in a fixed order."""
    out = {split: [] for split in SPLITS}

    def add(split, questions, answers, keywords):
        for i, question in enumerate(questions):
            out[split].append({"question": question, "answer": answers[i % len(answers)],
                               "answer_keywords": keywords})

    for code, meaning, keywords in ERROR_CODES:
        for template, answer_templates, kw in ((FORWARD, ERROR_ANSWERS, keywords), (REVERSE, CODE_ANSWERS, [code])):
            answers = [a.format(c=code, m=meaning) for a in answer_templates]
            for split, questions in _split([t.format(c=code, m=meaning) for t in template]).items():
                add(split, questions, answers, kw)
    for keywords, questions, answers in FACTS:
        for split, phrasings in _split(questions).items():
            add(split, phrasings, answers, keywords)
    held = out["heldout"]  # the quickstart's probe comes first: error E12, code -> meaning
    held.sort(key=lambda r: r["question"] != "What does error E12 indicate?")
    return out


def write(out_dir, force=False):
    return write_splits(records(), "qa", out_dir, force)


@cli
def main(argv=None):
    samples.main(sys.modules[__name__], ROOT / "recipes" / "tinyllama-qa" / "data", write, argv)


if __name__ == "__main__":
    main()
