"""Relation-extraction data from files researchers hold, read from a path (nothing is ever downloaded):

- TACRED-style JSON: a JSON array or JSON lines of records with `token`, `subj_start`/`subj_end`/`obj_start`/
  `obj_end` (inclusive token indices), `subj_type`/`obj_type`, `relation`, and optionally `stanford_head`
  (1-based, 0 = root), `stanford_deprel` and `stanford_pos`. Records with the same tokens (and `docid`) become
  one sentence with several pairs, so refinement sees them together.
- SemEval-2010 Task 8 text: blocks of `ID<TAB>"sentence with <e1>..</e1> and <e2>..</e2>"`, a label line
  such as `Cause-Effect(e2,e1)` or `Other` (read as NO-RELATION), an optional `Comment:` line, a blank line.
  Entities are untyped; the sentence has no tree.
- CoNLL-U with entity spans: the ten CoNLL-U columns per token, and comment lines
  `# entity = e0 1-2 PER` (1-based inclusive token ids) and `# pair = e0 e1 works_for [hard-negative tag]`;
  `# meta = {json}` carries generator metadata. `write_conllu` writes this format (round trip exact).

Every malformed input raises `RelationDataError` naming the file and the line.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Iterator

from alejax.envs.relation.schema import NO_RELATION, Entity, Pair, Sentence, Token


class RelationDataError(ValueError):
    """A malformed record, with the file and line it came from."""


def _error(path: str, line: int, message: str) -> RelationDataError:
    return RelationDataError(f"{path}: line {line}: {message}")


# --- CoNLL-U --------------------------------------------------------------------------------------------


def write_conllu(sentences: Iterable[Sentence], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(conllu_text(sentences))


def conllu_text(sentences: Iterable[Sentence]) -> str:
    blocks = []
    for s in sentences:
        lines = [f"# sent_id = {s.id}", f"# text = {s.text}"]
        lines += [f"# entity = {e.id} {e.start + 1}-{e.end} {e.type or '_'}" for e in s.entities]
        lines += [f"# pair = {p.subj} {p.obj} {p.label}" + (f" {p.tag}" if p.tag else "") for p in s.pairs]
        if s.meta:
            lines.append(f"# meta = {json.dumps(s.meta, sort_keys=True)}")
        for i, t in enumerate(s.tokens, start=1):
            head = "_" if t.head is None else str(t.head)
            lines.append("\t".join([str(i), t.form, t.lemma, t.upos, "_", "_", head, t.deprel, "_", t.misc]))
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def read_conllu(path: str) -> list[Sentence]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    sentences, block, start = [], [], 1
    for number, line in enumerate(lines + [""], start=1):
        if line.strip():
            if not block:
                start = number
            block.append((number, line))
        elif block:
            sentences.append(_conllu_sentence(path, block, f"s{len(sentences) + 1}", start))
            block = []
    return sentences


def _conllu_sentence(path: str, block: list[tuple[int, str]], default_id: str, start: int) -> Sentence:
    sentence_id, meta = default_id, {}
    tokens: list[Token] = []
    entity_lines, pair_lines = [], []
    for number, line in block:
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            key, value = key.strip(), value.strip()
            if not sep:
                continue  # a free comment
            if key == "sent_id":
                sentence_id = value
            elif key == "entity":
                entity_lines.append((number, value))
            elif key == "pair":
                pair_lines.append((number, value))
            elif key == "meta":
                try:
                    meta = json.loads(value)
                except json.JSONDecodeError as e:
                    raise _error(path, number, f"bad JSON in # meta: {e.msg}") from e
            continue
        columns = line.split("\t")
        if len(columns) != 10:
            raise _error(path, number, f"expected 10 tab-separated CoNLL-U columns, got {len(columns)}")
        token_id, form, lemma, upos, _, _, head, deprel, _, misc = columns
        if "-" in token_id or "." in token_id:
            continue  # multiword-token ranges and empty nodes are not syntactic words
        if token_id != str(len(tokens) + 1):
            raise _error(path, number, f"token id {token_id!r} out of order (expected {len(tokens) + 1})")
        if head != "_" and not head.isdigit():
            raise _error(path, number, f"head {head!r} is not a token id")
        tokens.append(Token(form, lemma, upos, None if head == "_" else int(head), deprel, misc))
    if not tokens:
        raise _error(path, start, "a sentence block without tokens")
    entities = []
    for number, value in entity_lines:
        parts = value.split()
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", parts[1]) if len(parts) == 3 else None
        if match is None:
            raise _error(path, number, f"expected '# entity = ID START-END TYPE', got {value!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        if not 1 <= first <= last <= len(tokens):
            raise _error(path, number, f"entity span {parts[1]} outside tokens 1..{len(tokens)}")
        entities.append(Entity(parts[0], first - 1, last, "" if parts[2] == "_" else parts[2]))
    known = {e.id for e in entities}
    pairs = []
    for number, value in pair_lines:
        parts = value.split()
        if len(parts) not in (3, 4):
            raise _error(path, number, f"expected '# pair = SUBJ OBJ LABEL [TAG]', got {value!r}")
        for entity_id in parts[:2]:
            if entity_id not in known:
                raise _error(path, number, f"pair names entity {entity_id!r}, not declared by '# entity'")
        pairs.append(Pair(parts[0], parts[1], parts[2], parts[3] if len(parts) == 4 else ""))
    head_count = sum(t.head is not None for t in tokens)
    if 0 < head_count < len(tokens):
        raise _error(path, start, "some tokens have a head and some have none")
    return Sentence(sentence_id, tuple(tokens), tuple(entities), tuple(pairs), meta)


# --- TACRED-style JSON ----------------------------------------------------------------------------------


def _json_records(path: str) -> Iterator[tuple[int, object]]:
    """(line number, record) from a JSON array or from JSON lines."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    decoder = json.JSONDecoder()
    stripped = text.lstrip()
    if not stripped.startswith("["):  # JSON lines
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as e:
                    raise _error(path, number, f"bad JSON: {e.msg} (column {e.colno})") from e
        return
    position = len(text) - len(stripped) + 1

    def skip(p: int) -> int:
        while p < len(text) and text[p].isspace():
            p += 1
        return p

    position = skip(position)
    while True:
        if position >= len(text):
            raise _error(path, text.count("\n") + 1, "unterminated JSON array")
        if text[position] == "]":
            return
        try:
            record, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as e:
            raise _error(path, e.lineno, f"bad JSON: {e.msg} (column {e.colno})") from e
        yield text.count("\n", 0, position) + 1, record
        position = skip(end)
        if position < len(text) and text[position] == ",":
            position = skip(position + 1)
        elif position < len(text) and text[position] != "]":
            line = text.count("\n", 0, position) + 1
            raise _error(path, line, f"expected ',' or ']' between records, got {text[position]!r}")


def read_tacred(path: str, no_relation: str = NO_RELATION) -> list[Sentence]:
    groups: dict[tuple, dict] = {}
    for number, record in _json_records(path):
        if not isinstance(record, dict):
            raise _error(path, number, f"a record must be a JSON object, got {type(record).__name__}")
        tokens = record.get("token")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
            raise _error(path, number, "'token' must be a non-empty list of strings")
        spans = {}
        for role in ("subj", "obj"):
            first, last = record.get(f"{role}_start"), record.get(f"{role}_end")
            if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < len(tokens)):
                raise _error(
                    path,
                    number,
                    f"{role}_start/{role}_end must be token indices with start <= end < {len(tokens)}",
                )
            spans[role] = (first, last + 1, str(record.get(f"{role}_type", "")))
        relation = record.get("relation")
        if not isinstance(relation, str) or not relation:
            raise _error(path, number, "'relation' must be a non-empty string")
        heads, deprels = record.get("stanford_head"), record.get("stanford_deprel")
        if heads is not None:
            if not (
                isinstance(heads, list)
                and len(heads) == len(tokens)
                and all(isinstance(h, int) for h in heads)
            ):
                raise _error(
                    path, number, f"'stanford_head' must be {len(tokens)} integers (1-based, 0 = root)"
                )
            if not (isinstance(deprels, list) and len(deprels) == len(tokens)):
                raise _error(
                    path, number, f"'stanford_deprel' must be {len(tokens)} labels when heads are given"
                )
        key = (record.get("docid", ""), tuple(tokens))
        group = groups.setdefault(
            key, {"id": str(record.get("id", f"line{number}")), "record": record, "spans": [], "pairs": []}
        )
        if heads is not None and "heads" not in group:
            group["heads"], group["deprels"] = heads, deprels
        group["pairs"].append((spans["subj"], spans["obj"], relation))
    sentences = []
    for (_, tokens), group in groups.items():
        spans = sorted({span for subj, obj, _ in group["pairs"] for span in (subj, obj)})
        entity_of = {span: f"e{i}" for i, span in enumerate(spans)}
        entities = tuple(Entity(entity_of[s], s[0], s[1], s[2]) for s in spans)
        pairs = tuple(
            Pair(entity_of[subj], entity_of[obj], NO_RELATION if label == no_relation else label)
            for subj, obj, label in group["pairs"]
        )
        heads, deprels = group.get("heads"), group.get("deprels")
        pos = group["record"].get("stanford_pos") or ["_"] * len(tokens)
        token_rows = tuple(
            Token(
                form,
                upos=str(pos[i]) if i < len(pos) else "_",
                head=None if heads is None else heads[i],
                deprel="_" if deprels is None else str(deprels[i]),
            )
            for i, form in enumerate(tokens)
        )
        sentences.append(Sentence(group["id"], token_rows, entities, pairs, {"source": "tacred"}))
    return sentences


# --- SemEval-2010 Task 8 --------------------------------------------------------------------------------

_SEMEVAL_LINE = re.compile(r'^(\S+)\t"(.*)"\s*$')
_SEMEVAL_LABEL = re.compile(r"^([A-Za-z][\w-]*)\((e[12]),(e[12])\)$")
_TAG = re.compile(r"</?e[12]>")
_WORD = re.compile(r"\w+(?:[-'.]\w+)*|[^\w\s]")


def read_semeval(path: str, other_label: str = "Other") -> list[Sentence]:
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    sentences, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        number = i + 1
        match = _SEMEVAL_LINE.match(lines[i])
        if match is None:
            raise _error(path, number, 'expected ID<TAB>"sentence with <e1>...</e1> and <e2>...</e2>"')
        sentence_id, text = match.groups()
        if i + 1 >= len(lines) or not lines[i + 1].strip():
            raise _error(path, number + 1, "missing the relation label line after the sentence")
        label_line = lines[i + 1].strip()
        tokens, spans = _semeval_tokens(path, number, text)
        if label_line == other_label:
            subj, obj, label = "e1", "e2", NO_RELATION
        else:
            label_match = _SEMEVAL_LABEL.match(label_line)
            if label_match is None or label_match.group(2) == label_match.group(3):
                raise _error(
                    path,
                    number + 1,
                    f"expected a label like Cause-Effect(e1,e2) or {other_label}, got {label_line!r}",
                )
            label, subj, obj = label_match.groups()
        entities = tuple(Entity(name, *spans[name]) for name in ("e1", "e2"))
        pairs = (Pair(subj, obj, label),)
        sentences.append(
            Sentence(sentence_id, tuple(Token(t) for t in tokens), entities, pairs, {"source": "semeval2010"})
        )
        i += 2
        if i < len(lines) and lines[i].startswith("Comment"):
            i += 1
    return sentences


def _semeval_tokens(path: str, number: int, text: str) -> tuple[list[str], dict[str, tuple[int, int]]]:
    tokens: list[str] = []
    opened: dict[str, int] = {}
    spans: dict[str, tuple[int, int]] = {}
    position = 0
    for tag in _TAG.finditer(text):
        tokens += _WORD.findall(text[position : tag.start()])
        name = tag.group(0).strip("</>")
        if tag.group(0).startswith("</"):
            if name not in opened:
                raise _error(path, number, f"</{name}> without <{name}>")
            if len(tokens) == opened[name]:
                raise _error(path, number, f"entity <{name}> is empty")
            spans[name] = (opened.pop(name), len(tokens))
        else:
            if name in opened or name in spans:
                raise _error(path, number, f"<{name}> opened twice")
            opened[name] = len(tokens)
        position = tag.end()
    tokens += _WORD.findall(text[position:])
    if opened or set(spans) != {"e1", "e2"}:
        raise _error(path, number, "the sentence must mark exactly <e1>...</e1> and <e2>...</e2>")
    return tokens, spans


def read_relation_data(path: str, format: str | None = None) -> list[Sentence]:
    """Any supported file: `format` is "tacred", "semeval" or "conllu" (None: from the extension, .json /
    .jsonl -> tacred, .conllu -> conllu, .txt -> semeval)."""
    readers = {"tacred": read_tacred, "semeval": read_semeval, "conllu": read_conllu}
    if format is None:
        ext = os.path.splitext(path)[1].lower()
        format = {".json": "tacred", ".jsonl": "tacred", ".conllu": "conllu", ".txt": "semeval"}.get(ext)
        if format is None:
            raise ValueError(
                f"cannot tell the format of {path!r} from its extension; pass format=tacred|semeval|conllu"
            )
    if format not in readers:
        raise ValueError(f"format={format!r}: expected one of {', '.join(readers)}")
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"no relation data at {path!r} (alejax never downloads data sets: point to a file you hold)"
        )
    return readers[format](path)
