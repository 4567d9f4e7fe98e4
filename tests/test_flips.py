"""Flipped documents: finding them, showing them in failure messages, and saving them."""

from __future__ import annotations

import json
from pathlib import Path

from pytest_finetune_bench.compare.flips import Flip, find_flips, format_flips, write_flips
from pytest_finetune_bench.compare.samples import SampleRecord, load_samples


def record(doc_id: int, value: float, response: str = "", prompt: str = "", target: str = "") -> SampleRecord:
    return SampleRecord(doc_id, value, prompt or f"prompt {doc_id}", response or f"answer {doc_id}", target)


def sides(base: dict[int, float], finetuned: dict[int, float]) -> tuple[dict[int, SampleRecord], ...]:
    return (
        {d: record(d, v, response=f"base answer {d}") for d, v in base.items()},
        {d: record(d, v, response=f"tuned answer {d}") for d, v in finetuned.items()},
    )


def test_find_flips_lists_regressions_first_then_by_doc_id() -> None:
    base, finetuned = sides(
        {1: 1.0, 2: 0.0, 3: 1.0, 4: 0.0, 7: 1.0, 9: 1.0},
        {1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0, 7: 0.0, 9: 1.0},
    )
    flips = find_flips(base, finetuned)
    assert [(f.doc_id, f.direction) for f in flips] == [
        (3, "regressed"),
        (7, "regressed"),
        (2, "improved"),
        (4, "improved"),
    ]
    assert flips[0] == Flip(
        doc_id=3,
        direction="regressed",
        prompt="prompt 3",
        base_response="base answer 3",
        finetuned_response="tuned answer 3",
        base_value=1.0,
        finetuned_value=0.0,
    )


def test_documents_only_one_side_scored_are_not_flips() -> None:
    base, finetuned = sides({1: 1.0, 2: 1.0}, {2: 1.0, 3: 0.0})
    assert find_flips(base, finetuned) == []
    assert find_flips({}, {}) == []


def test_continuous_flips_are_any_decrease_or_increase() -> None:
    base, finetuned = sides({1: 0.5, 2: 0.5, 3: 1.0}, {1: 0.25, 2: 0.75, 3: 1.0})
    flips = find_flips(base, finetuned)
    assert [(f.doc_id, f.direction, f.base_value, f.finetuned_value) for f in flips] == [
        (1, "regressed", 0.5, 0.25),
        (2, "improved", 0.5, 0.75),
    ]


def test_flip_keeps_the_target() -> None:
    flips = find_flips({0: record(0, 1.0, target="#### 7")}, {0: record(0, 0.0, target="#### 7")})
    assert flips[0].target == "#### 7"
    assert flips[0].to_json()["target"] == "#### 7"


def test_format_flips_shows_pass_fail_prompt_and_both_answers() -> None:
    base, finetuned = sides({12: 1.0, 15: 0.0}, {12: 0.0, 15: 1.0})
    text = format_flips(find_flips(base, finetuned))
    assert text == (
        "doc 12 pass→fail\n"
        "  prompt: prompt 12\n"
        "  base: base answer 12\n"
        "  fine-tuned: tuned answer 12\n"
        "doc 15 fail→pass\n"
        "  prompt: prompt 15\n"
        "  base: base answer 15\n"
        "  fine-tuned: tuned answer 15"
    )


def test_format_flips_truncates_long_text_and_keeps_one_line_each() -> None:
    long_prompt = "Write an essay. " * 40
    flips = find_flips(
        {0: record(0, 1.0, response="line one\nline two", prompt=long_prompt)},
        {0: record(0, 0.0, response="x" * 500, prompt=long_prompt)},
    )
    lines = format_flips(flips).split("\n")
    assert len(lines) == 4
    prompt_line, base_line, tuned_line = lines[1:]
    assert prompt_line.startswith("  prompt: Write an essay.") and prompt_line.endswith("…")
    assert len(prompt_line) <= len("  prompt: ") + 200
    assert base_line == "  base: line one\\nline two"
    assert tuned_line == "  fine-tuned: " + "x" * 199 + "…"


def test_format_flips_limits_the_number_shown() -> None:
    base, finetuned = sides({d: 1.0 for d in range(6)}, {d: 0.0 for d in range(6)})
    flips = find_flips(base, finetuned)
    text = format_flips(flips, limit=2)
    assert text.count("pass→fail") == 2
    assert "doc 0 " in text and "doc 1 " in text and "doc 2 " not in text
    assert text.endswith("... and 4 more flipped documents")
    assert format_flips(flips[:4], limit=3).endswith("... and 1 more flipped document")
    assert format_flips(flips, limit=0) == "... and 6 more flipped documents"


def test_format_flips_of_nothing_is_empty() -> None:
    assert format_flips([]) == ""


def test_format_flips_shows_continuous_values() -> None:
    flips = find_flips({4: record(4, 0.5)}, {4: record(4, 0.25)})
    assert format_flips(flips).startswith("doc 4 0.5→0.25\n")


def test_write_flips_writes_jsonl(tmp_path: Path) -> None:
    base, finetuned = sides({1: 1.0, 2: 0.0}, {1: 0.0, 2: 1.0})
    flips = find_flips(base, finetuned)
    flips[0] = Flip(**{**flips[0].to_json(), "finetuned_response": "¿Qué? 答え\nnext line"})
    path = tmp_path / "flips" / "ifeval.jsonl"
    write_flips(path, flips)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [flip.to_json() for flip in flips]
    assert "答え" in lines[0]  # readable, not \\u escapes
    assert [p.name for p in path.parent.iterdir()] == ["ifeval.jsonl"]  # no temporary file left behind


def test_write_flips_replaces_an_old_file_and_writes_empty_for_none(tmp_path: Path) -> None:
    path = tmp_path / "flips.jsonl"
    path.write_text("old content\n", encoding="utf-8")
    write_flips(path, [])
    assert path.read_text(encoding="utf-8") == ""


def test_flips_from_real_shaped_samples_files(tmp_path: Path) -> None:
    def line(doc_id: int, passed: bool, response: str) -> str:
        return json.dumps(
            {
                "doc_id": doc_id,
                "doc": {"key": doc_id, "prompt": f"Answer in lowercase, doc {doc_id}."},
                "target": "0",
                "arguments": {"gen_args_0": {"arg_0": "<|im_start|>user\n...", "arg_1": {"until": []}}},
                "resps": [[response]],
                "filtered_resps": [response],
                "filter": "none",
                "metrics": ["prompt_level_strict_acc"],
                "prompt_level_strict_acc": passed,
            }
        )

    base_file = tmp_path / "base.jsonl"
    tuned_file = tmp_path / "tuned.jsonl"
    base_file.write_text("\n".join([line(0, True, "ok"), line(1, False, "NO"), line(2, True, "fine")]) + "\n")
    tuned_file.write_text("\n".join([line(0, False, "OK!"), line(1, True, "no"), line(2, True, "fine")]) + "\n")
    key = "prompt_level_strict_acc,none"
    flips = find_flips(load_samples(base_file, key), load_samples(tuned_file, key))
    assert format_flips(flips, limit=1) == (
        "doc 0 pass→fail\n"
        "  prompt: Answer in lowercase, doc 0.\n"
        "  base: ok\n"
        "  fine-tuned: OK!\n"
        "... and 1 more flipped document"
    )
