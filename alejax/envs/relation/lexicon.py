"""The synthetic world's words: entity names, relation triggers, control verbs, modals, non-relational verbs
and filler clauses, each marked for the train or the held-out split (held-out splits use names and phrasings
never seen in training). Names are invented so a pretrained model brings no world knowledge about them.
"""

from __future__ import annotations

import dataclasses

TRAIN, HELDOUT = "train", "heldout"

FIRST_NAMES = {
    TRAIN: "Alice Bruno Carla Dmitri Elena Farid Greta Hugo Ines Jonas Kira Luca Mira Nadia Oscar Paula "
    "Quentin Rosa Stefan Tara".split(),
    HELDOUT: "Ugo Vera Wendell Xenia Yusuf Zora Anton Beatriz Cyril Dalia Emil Freya".split(),
}
SURNAMES = {
    TRAIN: "Moreau Okafor Lindqvist Tanaka Varga Petrov Silva Keller Novak Haddad Romero Brandt".split(),
    HELDOUT: "Quist Abara Marchetti Olsen Ferrand Kowalczyk".split(),
}
ORG_STEMS = {
    TRAIN: "Acme Veltrix Orbis Kestrel Norwell Quantia Brightline Halcyon Tessera Corvid Lumen Ardent".split(),
    HELDOUT: "Zenith Pallas Ironwood Solace Marlin Cobalt".split(),
}
ORG_SUFFIXES = ["", "Labs", "Systems", "Group", "Holdings", "Motors"]
CITIES = {
    TRAIN: "Dunmore Calloway Brisk Harrowgate Vell Amberly Tolland Marisca Corwen Estby Lorne Fenwick".split(),
    HELDOUT: "Quillan Sundale Ossory Pellam Wrexby Tamsin".split(),
}
COUNTRIES = {
    TRAIN: "Norvania Estmark Valdoria Kelland Ostria Meridia".split(),
    HELDOUT: "Zarvia Lusonia Brevia".split(),
}
PRODUCT_STEMS = {
    TRAIN: "Zephyr Nimbus Aurora Falcon Comet Pebble Orca Juniper".split(),
    HELDOUT: "Tundra Quasar Mistral Lynx".split(),
}
PRODUCT_SUFFIXES = ["", "X2", "Pro", "300"]

# lemma -> (3rd person singular, past, past participle)
VERB_FORMS = {
    "be": ("is", "was", "been"),
    "do": ("does", "did", "done"),
    "have": ("has", "had", "had"),
    "work": ("works", "worked", "worked"),
    "employ": ("employs", "employed", "employed"),
    "found": ("founds", "founded", "founded"),
    "establish": ("establishes", "established", "established"),
    "launch": ("launches", "launched", "launched"),
    "bear": ("bears", "bore", "born"),
    "hail": ("hails", "hailed", "hailed"),
    "live": ("lives", "lived", "lived"),
    "reside": ("resides", "resided", "resided"),
    "headquarter": ("headquarters", "headquartered", "headquartered"),
    "base": ("bases", "based", "based"),
    "situate": ("situates", "situated", "situated"),
    "acquire": ("acquires", "acquired", "acquired"),
    "buy": ("buys", "bought", "bought"),
    "absorb": ("absorbs", "absorbed", "absorbed"),
    "purchase": ("purchases", "purchased", "purchased"),
    "make": ("makes", "made", "made"),
    "manufacture": ("manufactures", "manufactured", "manufactured"),
    "build": ("builds", "built", "built"),
    "locate": ("locates", "located", "located"),
    "lie": ("lies", "lay", "lain"),
    "manage": ("manages", "managed", "managed"),
    "start": ("starts", "started", "started"),
    "begin": ("begins", "began", "begun"),
    "continue": ("continues", "continued", "continued"),
    "proceed": ("proceeds", "proceeded", "proceeded"),
    "fail": ("fails", "failed", "failed"),
    "refuse": ("refuses", "refused", "refused"),
    "decline": ("declines", "declined", "declined"),
    "hope": ("hopes", "hoped", "hoped"),
    "plan": ("plans", "planned", "planned"),
    "want": ("wants", "wanted", "wanted"),
    "intend": ("intends", "intended", "intended"),
    "meet": ("meets", "met", "met"),
    "praise": ("praises", "praised", "praised"),
    "thank": ("thanks", "thanked", "thanked"),
    "interview": ("interviews", "interviewed", "interviewed"),
    "admire": ("admires", "admired", "admired"),
    "congratulate": ("congratulates", "congratulated", "congratulated"),
    "visit": ("visits", "visited", "visited"),
    "leave": ("leaves", "left", "left"),
    "tour": ("tours", "toured", "toured"),
    "criticize": ("criticizes", "criticized", "criticized"),
    "sue": ("sues", "sued", "sued"),
    "partner": ("partners", "partnered", "partnered"),
    "compete": ("competes", "competed", "competed"),
    "expand": ("expands", "expanded", "expanded"),
    "invest": ("invests", "invested", "invested"),
    "recall": ("recalls", "recalled", "recalled"),
    "test": ("tests", "tested", "tested"),
    "review": ("reviews", "reviewed", "reviewed"),
    "rise": ("rises", "rose", "risen"),
    "react": ("reacts", "reacted", "reacted"),
    "fall": ("falls", "fell", "fallen"),
    "resume": ("resumes", "resumed", "resumed"),
}

NOUN_PLURALS = {
    "employee": "employees",
    "engineer": "engineers",
    "founder": "founders",
    "native": "natives",
    "resident": "residents",
    "inhabitant": "inhabitants",
    "maker": "makers",
    "city": "cities",
    "part": "part",
}


@dataclasses.dataclass(frozen=True)
class Trigger:
    """One phrasing of a relation. kind: "verb" (S V [P] O), "passive" (S be V-en P O) or "noun"
    (S be [DET] N P O). Non-chainable triggers never sit under a control verb ("managed to be born in")."""

    id: str
    relation: str
    kind: str
    lemma: str
    prep: str = ""
    tense: str = "pres"
    det: str = ""
    chainable: bool = True
    split: str = TRAIN


TRIGGERS = (
    Trigger("works_for/work_for", "works_for", "verb", "work", "for"),
    Trigger("works_for/employed_by", "works_for", "passive", "employ", "by"),
    Trigger("works_for/employee_of", "works_for", "noun", "employee", "of", det="an"),
    Trigger("works_for/engineer_at", "works_for", "noun", "engineer", "at", det="an", split=HELDOUT),
    Trigger("founded/found", "founded", "verb", "found", tense="past"),
    Trigger("founded/establish", "founded", "verb", "establish", tense="past"),
    Trigger("founded/founder_of", "founded", "noun", "founder", "of", det="the"),
    Trigger("founded/launch", "founded", "verb", "launch", tense="past", split=HELDOUT),
    Trigger("born_in/born_in", "born_in", "passive", "bear", "in", tense="past", chainable=False),
    Trigger("born_in/native_of", "born_in", "noun", "native", "of", det="a", chainable=False),
    Trigger("born_in/hail_from", "born_in", "verb", "hail", "from", chainable=False, split=HELDOUT),
    Trigger("lives_in/live_in", "lives_in", "verb", "live", "in"),
    Trigger("lives_in/reside_in", "lives_in", "verb", "reside", "in"),
    Trigger("lives_in/resident_of", "lives_in", "noun", "resident", "of", det="a"),
    Trigger("lives_in/inhabitant_of", "lives_in", "noun", "inhabitant", "of", det="an", split=HELDOUT),
    Trigger("headquartered_in/headquartered_in", "headquartered_in", "passive", "headquarter", "in"),
    Trigger("headquartered_in/based_in", "headquartered_in", "passive", "base", "in"),
    Trigger("headquartered_in/situated_in", "headquartered_in", "passive", "situate", "in", split=HELDOUT),
    Trigger("acquired/acquire", "acquired", "verb", "acquire", tense="past"),
    Trigger("acquired/buy", "acquired", "verb", "buy", tense="past"),
    Trigger("acquired/absorb", "acquired", "verb", "absorb", tense="past"),
    Trigger("acquired/purchase", "acquired", "verb", "purchase", tense="past", split=HELDOUT),
    Trigger("produces/make", "produces", "verb", "make"),
    Trigger("produces/manufacture", "produces", "verb", "manufacture"),
    Trigger("produces/maker_of", "produces", "noun", "maker", "of", det="the"),
    Trigger("produces/build", "produces", "verb", "build", split=HELDOUT),
    Trigger("located_in/located_in", "located_in", "passive", "locate", "in", chainable=False),
    Trigger("located_in/lie_in", "located_in", "verb", "lie", "in", chainable=False),
    Trigger("located_in/city_in", "located_in", "noun", "city", "in", det="a", chainable=False),
    Trigger("located_in/part_of", "located_in", "noun", "part", "of", chainable=False, split=HELDOUT),
)


@dataclasses.dataclass(frozen=True)
class Word:
    """A template word of some family (control verb, modal) with its split."""

    id: str
    lemma: str
    split: str = TRAIN


# Control verbs heading an xcomp chain ("Alice managed to join Acme"): implicative ones keep the relation
# asserted, negative implicatives negate it, the rest leave it hypothetical.
CONTROL_VERBS = {
    "asserted": (
        Word("ctrl/manage", "manage"),
        Word("ctrl/continue", "continue"),
        Word("ctrl/start", "start"),
        Word("ctrl/proceed", "proceed", HELDOUT),
        Word("ctrl/begin", "begin", HELDOUT),
    ),
    "negated": (
        Word("ctrl/fail", "fail"),
        Word("ctrl/refuse", "refuse"),
        Word("ctrl/decline", "decline", HELDOUT),
    ),
    "hypothetical": (
        Word("ctrl/hope", "hope"),
        Word("ctrl/plan", "plan"),
        Word("ctrl/want", "want"),
        Word("ctrl/intend", "intend", HELDOUT),
    ),
}
MODALS = (Word("modal/may", "may"), Word("modal/might", "might"), Word("modal/could", "could", HELDOUT))


@dataclasses.dataclass(frozen=True)
class Verb:
    """A verb that links two entities without any schema relation ("Alice met Bob", "Acme sued Orbis")."""

    id: str
    lemma: str
    subj_type: str
    obj_type: str
    prep: str = ""
    tense: str = "past"
    split: str = TRAIN


NON_RELATIONAL_VERBS = (
    Verb("nonrel/meet", "meet", "PER", "PER"),
    Verb("nonrel/praise", "praise", "PER", "PER"),
    Verb("nonrel/thank", "thank", "PER", "PER"),
    Verb("nonrel/interview", "interview", "PER", "PER"),
    Verb("nonrel/admire", "admire", "PER", "PER", split=HELDOUT),
    Verb("nonrel/congratulate", "congratulate", "PER", "PER", split=HELDOUT),
    Verb("nonrel/visit_city", "visit", "PER", "CITY"),
    Verb("nonrel/leave_city", "leave", "PER", "CITY"),
    Verb("nonrel/tour", "tour", "PER", "CITY", split=HELDOUT),
    Verb("nonrel/visit_org", "visit", "PER", "ORG"),
    Verb("nonrel/criticize", "criticize", "PER", "ORG"),
    Verb("nonrel/sue_org", "sue", "PER", "ORG", split=HELDOUT),
    Verb("nonrel/sue", "sue", "ORG", "ORG"),
    Verb("nonrel/partner_with", "partner", "ORG", "ORG", "with"),
    Verb("nonrel/compete_with", "compete", "ORG", "ORG", "with", "pres", HELDOUT),
    Verb("nonrel/expand_into", "expand", "ORG", "CITY", "into"),
    Verb("nonrel/leave_city_org", "leave", "ORG", "CITY"),
    Verb("nonrel/invest_in", "invest", "ORG", "CITY", "in", split=HELDOUT),
    Verb("nonrel/recall", "recall", "ORG", "PRODUCT"),
    Verb("nonrel/test", "test", "ORG", "PRODUCT"),
    Verb("nonrel/review", "review", "ORG", "PRODUCT", split=HELDOUT),
)


@dataclasses.dataclass(frozen=True)
class Filler:
    """An entity-free clause ("prices will rise") that hosts a conditional: "If Alice joins Acme, ..."."""

    id: str
    det: str
    noun: str
    verb: str
    split: str = TRAIN


FILLERS = (
    Filler("filler/prices_rise", "", "prices", "rise"),
    Filler("filler/board_meet", "the", "board", "meet"),
    Filler("filler/analysts_react", "", "analysts", "react"),
    Filler("filler/shares_fall", "", "shares", "fall", HELDOUT),
    Filler("filler/talks_resume", "", "talks", "resume", HELDOUT),
)
