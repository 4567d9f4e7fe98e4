"""A task of the user's own, written as a user writes one: a YAML file, a `!function` helper, local data."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

QUESTIONS = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", "Rome"),
    ("What is the capital of Japan?", "Tokyo"),
    ("How many legs does a spider have?", "eight"),
    ("What colour is the sky on a clear day?", "blue"),
)
# Scores a reply by whether it names the answer.
MENTIONS_ANSWER = '''
def process_results(doc, results):
    return {"mentions_answer": float(doc["answer"].lower() in results[0].lower())}
'''
MENTIONS_METRICS = ({"metric": "mentions_answer", "aggregation": "mean", "higher_is_better": True},)
# Scores a reply by the share of its letters in capitals: lower is better (the fake fine-tune shouts).
SHOUTING = '''
def process_results(doc, results):
    letters = [c for c in results[0] if c.isalpha()]
    return {"shouting": sum(c.isupper() for c in letters) / max(len(letters), 1)}
'''
SHOUTING_METRICS = ({"metric": "shouting", "aggregation": "mean", "higher_is_better": False},)

TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/{name}.jsonl
test_split: test
output_type: generate_until
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list: {metrics}
metadata:
  version: 1.0
"""
HELPER = '''
def doc_to_text(doc):
    return f"Question: {doc['question']}\\nAnswer:"
'''


def write_task(
    root: Path,
    name: str = "my_task",
    process_results: str = MENTIONS_ANSWER,
    metrics: Sequence[Mapping[str, Any]] = MENTIONS_METRICS,
    questions: Sequence[tuple[str, str]] = QUESTIONS,
) -> Path:
    """ROOT/tasks/{name}.yaml, ROOT/tasks/utils.py and ROOT/data/{name}.jsonl (read from ROOT); returns ROOT/tasks."""
    tasks, data = root / "tasks", root / "data"
    tasks.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    # JSON is YAML too: the metric list is written in its flow style.
    (tasks / f"{name}.yaml").write_text(TASK_YAML.format(name=name, metrics=json.dumps(list(metrics))))
    (tasks / "utils.py").write_text(HELPER + process_results)
    (data / f"{name}.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in questions))
    return tasks
