"""Validate the offline demo benchmark data under pytest_finetune_bench/data/demo/.

Plain script (not collected by pytest): ``python tests/data_check.py``.
Exits non-zero if any file is missing or any row violates the schema of the
Hugging Face dataset it stands in for (google/IFEval, openai/gsm8k,
Rowan/hellaswag, cais/mmlu).  For IFEval it also builds every instruction
through lm-eval's registry and scores a dummy response with lm-eval's own
``test_instruction_following_strict`` / ``process_results``.
"""

from __future__ import annotations

import collections
import glob
import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, cast

from pytest_finetune_bench.demo import demo_data_dir

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The installed package's copy: in a wheel's test run that is the data the wheel ships.
DATA = demo_data_dir()

# Instructions whose checks need nltk punkt (not downloadable offline) or are
# flaky with langdetect; the demo data must not use them.
BANNED_INSTRUCTIONS = {
    "length_constraints:number_sentences",  # instructions_util.count_sentences -> punkt
    "change_case:capital_word_frequency",  # nltk.word_tokenize -> punkt
    "keywords:key_sentences",  # split_into_sentences, not registered anyway
    "language:response_language",  # langdetect on free text
}

EXPECTED_ROWS = {
    "ifeval/train.jsonl": 24,
    "gsm8k/train.jsonl": 6,
    "gsm8k/test.jsonl": 6,
    "hellaswag/validation.jsonl": 6,
}
MMLU_ROWS_PER_SUBJECT = 2

problems: list[str] = []


def lm_eval_config(relative: str) -> dict[str, Any]:
    """One of lm-eval's task configs (a path under lm_eval/tasks/), read by lm-eval's own YAML loader."""
    import lm_eval
    from lm_eval.tasks._yaml_loader import load_yaml

    return cast("dict[str, Any]", load_yaml(Path(lm_eval.__file__).parent / "tasks" / relative, resolve_func=False))


def problem(msg: str) -> None:
    problems.append(msg)
    print(f"PROBLEM: {msg}")


def load_jsonl(rel: str) -> list[dict[str, Any]]:
    path = DATA / rel
    if not path.is_file():
        problem(f"{rel}: missing")
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                problem(f"{rel}:{n}: blank line")
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                problem(f"{rel}:{n}: invalid JSON ({e})")
                continue
            if not isinstance(obj, dict):
                problem(f"{rel}:{n}: not a JSON object")
                continue
            rows.append(obj)
    return rows


def check_keys(where: str, row: dict[str, Any], types: dict[str, type]) -> bool:
    ok = True
    if set(row) != set(types):
        problem(f"{where}: keys {sorted(row)} != expected {sorted(types)}")
        ok = False
    for key, typ in types.items():
        if key in row and not (isinstance(row[key], typ) and not (typ is int and isinstance(row[key], bool))):
            problem(f"{where}: {key!r} should be {typ.__name__}, got {type(row[key]).__name__}")
            ok = False
    return ok


def check_count(rel: str, rows: list[dict[str, Any]], expected: int) -> None:
    if len(rows) != expected:
        problem(f"{rel}: {len(rows)} rows, expected {expected}")


# --------------------------------------------------------------------------- IFEval
def check_ifeval() -> collections.Counter[str]:
    from lm_eval.tasks.ifeval import instructions_registry
    from lm_eval.tasks.ifeval import utils as ifeval_utils

    rel = "ifeval/train.jsonl"
    rows = load_jsonl(rel)
    check_count(rel, rows, EXPECTED_ROWS[rel])
    counts: collections.Counter[str] = collections.Counter()
    keys_seen = set()
    kwarg_types: dict[str, set[str]] = collections.defaultdict(set)
    n_instr: collections.Counter[int] = collections.Counter()
    dummy = "Hello, World. This is a dummy response.\n* point one\n* point two\nP.S. bye"

    for i, row in enumerate(rows):
        where = f"{rel}:{i + 1}"
        if not check_keys(where, row, {"key": int, "prompt": str, "instruction_id_list": list, "kwargs": list}):
            continue
        if row["key"] in keys_seen:
            problem(f"{where}: duplicate key {row['key']}")
        keys_seen.add(row["key"])
        ids, kwargs_list = row["instruction_id_list"], row["kwargs"]
        if not ids:
            problem(f"{where}: empty instruction_id_list")
        if len(ids) != len(kwargs_list):
            problem(f"{where}: {len(ids)} instruction ids but {len(kwargs_list)} kwargs")
            continue
        if len(set(ids)) != len(ids):
            problem(f"{where}: repeated instruction id")
        n_instr[len(ids)] += 1
        for iid, kw in zip(ids, kwargs_list, strict=True):
            counts[iid] += 1
            if iid in BANNED_INSTRUCTIONS:
                problem(f"{where}: banned instruction {iid}")
            cls = instructions_registry.INSTRUCTION_DICT.get(iid)
            if cls is None:
                problem(f"{where}: unknown instruction id {iid!r}")
                continue
            if not isinstance(kw, dict):
                problem(f"{where}: kwargs for {iid} is not an object")
                continue
            params = set(inspect.signature(cls.build_description).parameters) - {"self"}
            extra = set(kw) - params
            if extra:
                problem(f"{where}: {iid} kwargs {sorted(extra)} not accepted by build_description {sorted(params)}")
            for k, v in kw.items():
                if v is None or v == "" or v == []:
                    problem(f"{where}: {iid} kwarg {k!r} is empty (lm-eval drops falsy kwargs)")
                kwarg_types[k].add(type(v).__name__)
            try:
                inst = cls(iid)
                desc = inst.build_description(**kw)
            except Exception as e:  # noqa: BLE001
                problem(f"{where}: {iid}.build_description({kw}) raised {e!r}")
                continue
            if not isinstance(desc, str) or not desc:
                problem(f"{where}: {iid}.build_description returned {desc!r}")
            if iid == "combination:repeat_prompt" and not row["prompt"].startswith(kw.get("prompt_to_repeat", "\0")):
                problem(f"{where}: prompt does not start with prompt_to_repeat")
            for k, v in kw.items():
                if isinstance(v, str) and k in ("end_phrase", "postscript_marker") and v not in row["prompt"]:
                    problem(f"{where}: prompt does not mention {k}={v!r}")
                if isinstance(v, list):
                    for w in v:
                        if w not in row["prompt"]:
                            problem(f"{where}: prompt does not mention keyword {w!r}")
        try:
            inp = ifeval_utils.InputExample(
                key=row["key"],
                instruction_id_list=ids,
                prompt=row["prompt"],
                kwargs=kwargs_list,
            )
            out = ifeval_utils.test_instruction_following_strict(inp, dummy)
            if len(out.follow_instruction_list) != len(ids):
                problem(f"{where}: strict check returned {len(out.follow_instruction_list)} results")
            res = ifeval_utils.process_results(row, [dummy])
            if set(res) != {
                "prompt_level_strict_acc",
                "inst_level_strict_acc",
                "prompt_level_loose_acc",
                "inst_level_loose_acc",
            }:
                problem(f"{where}: unexpected process_results keys {sorted(res)}")
        except Exception as e:  # noqa: BLE001
            problem(f"{where}: scoring a dummy response raised {e!r}")

    for k, tys in kwarg_types.items():
        if len(tys) > 1:
            problem(f"{rel}: kwarg {k!r} has mixed types {sorted(tys)} (breaks Arrow schema)")
    print(f"[ifeval] {len(rows)} prompts ({n_instr[1]} with 1 instruction, {n_instr[2]} with 2, "
          f"{sum(v for k, v in n_instr.items() if k > 2)} with more); instruction counts:")
    for iid, c in sorted(counts.items()):
        print(f"    {iid:42s} {c}")
    return counts


# --------------------------------------------------------------------------- GSM8K
def check_gsm8k() -> None:
    for split in ("train", "test"):
        rel = f"gsm8k/{split}.jsonl"
        rows = load_jsonl(rel)
        check_count(rel, rows, EXPECTED_ROWS[rel])
        for i, row in enumerate(rows):
            where = f"{rel}:{i + 1}"
            if not check_keys(where, row, {"question": str, "answer": str}):
                continue
            last = row["answer"].rstrip("\n").split("\n")[-1]
            if not re.fullmatch(r"#### -?[0-9][0-9,]*(\.[0-9]+)?", last):
                problem(f"{where}: answer does not end with a '#### <number>' line: {last!r}")
            if not re.search(r"#### (\-?[0-9\.\,]+)", row["answer"]):
                problem(f"{where}: lm-eval strict-match regex finds no answer")
            for expr, val in re.findall(r"<<([^=<>]+)=([^<>]+)>>", row["answer"]):
                try:
                    if abs(eval(expr, {"__builtins__": {}}) - float(val)) > 1e-9:
                        problem(f"{where}: calculator annotation {expr}={val} is wrong")
                except Exception as e:  # noqa: BLE001
                    problem(f"{where}: bad calculator annotation <<{expr}={val}>> ({e})")
        print(f"[gsm8k] {split}: {len(rows)} rows")


# --------------------------------------------------------------------------- HellaSwag
def check_hellaswag() -> None:
    rel = "hellaswag/validation.jsonl"
    rows = load_jsonl(rel)
    check_count(rel, rows, EXPECTED_ROWS[rel])
    schema = {
        "ind": int, "activity_label": str, "ctx_a": str, "ctx_b": str, "ctx": str,
        "endings": list, "source_id": str, "split": str, "split_type": str, "label": str,
    }
    for i, row in enumerate(rows):
        where = f"{rel}:{i + 1}"
        if not check_keys(where, row, schema):
            continue
        if len(row["endings"]) != 4 or not all(isinstance(e, str) and e for e in row["endings"]):
            problem(f"{where}: endings must be 4 non-empty strings")
        if row["label"] not in ("0", "1", "2", "3"):
            problem(f"{where}: label must be a string '0'..'3', got {row['label']!r}")
        if row["ctx"] != row["ctx_a"] + " " + row["ctx_b"]:
            problem(f"{where}: ctx != ctx_a + ' ' + ctx_b")
        if row["split"] != "val" or row["split_type"] != "indomain":
            problem(f"{where}: split/split_type should be 'val'/'indomain'")
    try:
        import datasets
        from lm_eval.tasks.hellaswag import utils as hs_utils

        ds = datasets.load_dataset("json", data_files={"validation": str(DATA / rel)})["validation"]
        docs = hs_utils.process_docs(ds)
        assert all(len(d["choices"]) == 4 and 0 <= d["gold"] <= 3 for d in docs)
    except Exception as e:  # noqa: BLE001
        problem(f"{rel}: lm-eval hellaswag process_docs failed: {e!r}")
    print(f"[hellaswag] validation: {len(rows)} rows")


# --------------------------------------------------------------------------- MMLU
def mmlu_subjects() -> list[str]:
    import lm_eval

    task_dir = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    subjects = []
    for f in sorted(glob.glob(str(task_dir / "mmlu_*.yaml"))):
        m = re.search(r'"?dataset_name"?:\s*"?([A-Za-z_]+)"?', Path(f).read_text())
        if m:
            subjects.append(m.group(1))
    return sorted(subjects)


def check_mmlu() -> None:
    subjects = mmlu_subjects()
    if len(subjects) != 57:
        problem(f"mmlu: expected 57 subjects in lm-eval's mmlu/default, found {len(subjects)}")
    present = sorted(p.name for p in (DATA / "mmlu").iterdir() if p.is_dir()) if (DATA / "mmlu").is_dir() else []
    for extra in sorted(set(present) - set(subjects)):
        problem(f"mmlu/{extra}: not an lm-eval mmlu subject")
    total = 0
    answers: collections.Counter[int] = collections.Counter()
    for s in subjects:
        rel = f"mmlu/{s}/test.jsonl"
        rows = load_jsonl(rel)
        check_count(rel, rows, MMLU_ROWS_PER_SUBJECT)
        total += len(rows)
        for i, row in enumerate(rows):
            where = f"{rel}:{i + 1}"
            if not check_keys(where, row, {"question": str, "subject": str, "choices": list, "answer": int}):
                continue
            if row["subject"] != s:
                problem(f"{where}: subject {row['subject']!r} != {s!r}")
            if len(row["choices"]) != 4 or not all(isinstance(c, str) and c for c in row["choices"]):
                problem(f"{where}: choices must be 4 non-empty strings")
            elif len(set(row["choices"])) != 4:
                problem(f"{where}: duplicate choices")
            if not 0 <= row["answer"] <= 3:
                problem(f"{where}: answer {row['answer']} out of range")
            answers[row["answer"]] += 1
    print(f"[mmlu] {len(subjects)} subjects, {total} rows; answer index distribution "
          f"{dict(sorted(answers.items()))}")


# --------------------------------------------------------------------------- datasets loader
def check_datasets_loader() -> None:
    """Load every file through the `datasets` json builder, as lm-eval would."""
    import datasets
    from lm_eval.tasks.ifeval import utils as ifeval_utils

    files = sorted(str(p.relative_to(DATA)) for p in DATA.rglob("*.jsonl"))
    for rel in files:
        try:
            ds = datasets.load_dataset("json", data_files={"x": str(DATA / rel)})["x"]
            if rel in EXPECTED_ROWS and len(ds) != EXPECTED_ROWS[rel]:
                problem(f"{rel}: datasets loaded {len(ds)} rows")
        except Exception as e:  # noqa: BLE001
            problem(f"{rel}: datasets.load_dataset('json') failed: {e!r}")
    # Arrow unifies the kwargs structs (missing keys -> None); lm-eval drops falsy values.
    n_ok = n_rows = 0
    try:
        ds = datasets.load_dataset("json", data_files={"train": str(DATA / "ifeval/train.jsonl")})["train"]
        n_rows = len(ds)
        for doc in ds:
            try:
                res = ifeval_utils.process_results(doc, ["a dummy response"])
                n_ok += isinstance(res["prompt_level_strict_acc"], bool)
            except Exception as e:  # noqa: BLE001
                problem(f"ifeval: process_results failed on Arrow row key={doc.get('key')}: {e!r}")
    except Exception as e:  # noqa: BLE001
        problem(f"ifeval: loading via datasets failed: {e!r}")
    print(f"[datasets] loaded {len(files)} jsonl files via load_dataset('json'); "
          f"ifeval process_results ok on {n_ok}/{n_rows} Arrow rows")


def main() -> int:
    try:
        import datasets

        datasets.disable_progress_bars()
        datasets.logging.set_verbosity_error()
    except ImportError:
        pass
    if not DATA.is_dir():
        problem(f"{DATA} does not exist")
    else:
        check_ifeval()
        check_gsm8k()
        check_hellaswag()
        check_mmlu()
        check_datasets_loader()
    if problems:
        print(f"\nFAILED: {len(problems)} problem(s)")
        return 1
    print("\nOK: all demo data files are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
