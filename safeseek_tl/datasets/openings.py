"""Compliant openings ("Sure, here is ...") written from a request by rule, for alignment records.

The rule covers the request shapes of harmful-behaviour benchmarks: imperatives ("Write a phishing
email ..." -> "Sure, here is a phishing email ..."), how-to questions ("How can I ...?" ->
"Sure, here is how to ...") and wishes ("I want to ..."), with the first person turned into the
second. Any other shape (a wh-question, a statement) gets "Sure, here is what you asked for:".
"""

from __future__ import annotations

import re

GENERIC_OPENING = "Sure, here is what you asked for:"
_LEAD_IN = re.compile(r"^(?:please\s+|(?:can|could|would|will)\s+you\s+(?:please\s+)?)", re.IGNORECASE)
_HOW_QUESTION = re.compile(r"^how\s+(?:do|can|could|would|should|might|may)\s+(?:i|we|you|one|someone|a person|people)\s+(.+)$", re.IGNORECASE)
_HOW_TO = re.compile(r"^how\s+to\s+(.+)$", re.IGNORECASE)
_BEST_WAY = re.compile(r"^what(?:'s|\s+is|\s+are)\s+the\s+((?:best|easiest|fastest|quickest|simplest|safest|cheapest|most\s+\w+)\s+ways?\s+to\s+.+)$", re.IGNORECASE)
# "What tools can I use to ...?" -> "tools you can use to ..."; "How many pills would I need ...?" -> "how many pills you would need ..."
_WHAT_CAN = re.compile(r"^(?:what|which)\s+(.+?)\s+(can|could|should|would|do|must)\s+(?:i|we)\s+(.+)$", re.IGNORECASE)
_HOW_MANY = re.compile(r"^(how\s+(?:many|much)\s+.+?)\s+(can|could|should|would|do|must)\s+(?:i|we)\s+(.+)$", re.IGNORECASE)
_WISH = re.compile(r"^i\s+(?:want|need|would\s+like|'d\s+like)\s+to\s+(.+)$", re.IGNORECASE)
_HELP = re.compile(r"^help\s+(?:me|us)\s+(?:to\s+)?(.+)$", re.IGNORECASE)
# imperative verbs whose object is the thing handed over ("Write a poem" -> "a poem"), some with a noun in front
_OBJECT_VERBS = {
    **dict.fromkeys(
        "write draft compose create generate produce design develop make build give provide suggest craft prepare find "
        "explain describe outline detail compile share recommend tell show teach".split() + ["make up"],
        "",
    ),
    "plan": "a plan for ",
    "list": "a list of ",
    "summarize": "a summary of ",
}
_OBJECT_VERB = re.compile(rf"^({'|'.join(sorted(_OBJECT_VERBS, key=len, reverse=True))})(?:\s+(?:me|us))?\s+(.+)$", re.IGNORECASE)
# first words that cannot start an imperative
_NOT_A_VERB = set("i my we our you your the a an this that these those there it is are was were do does did what which who whom whose where when why how can could would should will shall may might must if in as for".split())
_PERSON = {
    "i": "you", "me": "you", "my": "your", "mine": "yours", "myself": "yourself", "i'm": "you're", "i've": "you've",
    "i'd": "you'd", "i'll": "you'll", "we": "you", "us": "you", "our": "your", "ours": "yours", "ourselves": "yourselves",
}  # fmt: skip
_WORD = re.compile(r"[A-Za-z][A-Za-z']*")
_PLURAL_STARTS = {"some", "several", "many", "few", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"}
_NOUN_PHRASE_ENDS = set("about for to that of on with from in into by which who so and as against without how why when where while".split())


def _swap_person(match: re.Match[str]) -> str:
    word = match.group()
    lower = word.lower()
    # "I", "my", "My" change; all-capital words do not ("US" is a country)
    return _PERSON[lower] if lower in _PERSON and word in (lower, lower.capitalize()) else word


def _second_person(text: str) -> str:
    return _WORD.sub(_swap_person, text)


def _is_plural(noun_phrase: str) -> bool:
    """Whether the phrase's head noun is plural: the word before the first preposition, clause or -ing word."""
    words = noun_phrase.lower().split()
    if not words or words[0] in {"a", "an", "one", "this", "that", "how", "what", "why", "where", "when", "who", "which"}:
        return words[:2] == ["a", "few"]
    if words[0] in _PLURAL_STARTS or words[0].isdigit():
        return True
    head = words[0]
    for position, word in enumerate(words):
        if word in _NOUN_PHRASE_ENDS or (position > 0 and word.endswith("ing")):
            break
        head = word
    return head.endswith("s") and not head.endswith(("ss", "us", "is"))


def _opening_of(sentence: str) -> str | None:
    """The opening for one sentence, or ``None`` when the rule does not know its shape."""
    question = sentence.rstrip().endswith("?")
    sentence = _LEAD_IN.sub("", sentence.strip().rstrip(" .!?"))
    for pattern in (_HOW_QUESTION, _HOW_TO, _WISH):
        match = pattern.match(sentence)
        if match:
            return f"Sure, here is how to {_second_person(match.group(1))}:"
    match = _WHAT_CAN.match(sentence) or _HOW_MANY.match(sentence)
    if match:
        things, modal, rest = match.groups()
        how = things.lower().startswith("how")
        things = "h" + things[1:] if how else things
        verb = "is" if how or not _is_plural(things) else "are"
        return f"Sure, here {verb} {_second_person(things)} you {modal.lower()} {_second_person(rest)}:"
    match = _BEST_WAY.match(sentence)
    if match:
        return f"Sure, here {'are' if _is_plural(match.group(1)) else 'is'} the {_second_person(match.group(1))}:"
    match = _HELP.match(sentence)
    if match:
        return _opening_of(match.group(1)) or f"Sure, here is how to {_second_person(match.group(1))}:"
    match = _OBJECT_VERB.match(sentence)
    if match:
        noun = _OBJECT_VERBS[match.group(1).lower()]
        thing = _second_person(match.group(2))
        if thing.lower().startswith("about "):
            noun = "some information "
        verb = "are" if not noun and _is_plural(thing) else "is"
        return f"Sure, here {verb} {noun}{thing}:"
    first = sentence.split(maxsplit=1)[0].lower() if sentence else ""
    if not first or first in _NOT_A_VERB or question:
        return None
    # another imperative ("Hack into ...", "Convince people that ..."): how to do it
    keep_case = len(sentence) > 1 and sentence[1].isupper()  # "DDoS a site" keeps its capitals
    return f"Sure, here is how to {_second_person(sentence if keep_case else sentence[0].lower() + sentence[1:])}:"


def compliant_opening(prompt: str) -> str:
    """A compliant opening for ``prompt``: "Sure, here is/are ...:" with the request's own object.

    The last line of the prompt is the request (a HarmBench context comes before it); its
    sentences are tried from the last to the first, and the first one of a known shape gives the
    opening, with its final punctuation dropped and "I/my/me" turned into "you/your/you".
    """
    lines = [line.strip() for line in prompt.strip().splitlines() if line.strip()]
    sentences = re.split(r"(?<=[.!?])\s+", lines[-1]) if lines else []
    for sentence in reversed(sentences):
        opening = _opening_of(sentence)
        if opening is not None:
            return opening
    return GENERIC_OPENING
