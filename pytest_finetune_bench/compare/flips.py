"""Documents whose score changed between the base and the fine-tuned model.

An aggregate drop of two points says little about what broke; the handful of prompts that went
from pass to fail, with both answers side by side, usually does.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_finetune_bench.compare.samples import SampleRecord
from pytest_finetune_bench.store.files import atomic_write_text
from pytest_finetune_bench.text import printable

Direction = Literal["regressed", "improved"]

# Enough of a prompt or answer to recognise it in a test failure message without drowning it.
_MAX_SHOWN_CHARS = 200


@dataclass(frozen=True)
class Flip:
    """One document scored on both sides that got worse ("regressed") or better ("improved").

    Worse is lower for most metrics and higher for those where lower is better.
    """

    doc_id: int
    direction: Direction
    prompt: str
    base_response: str
    finetuned_response: str
    base_value: float
    finetuned_value: float
    target: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> Flip:
        """A flip read back from a flips file; ValueError for anything but what to_json writes."""
        if not isinstance(data, dict) or set(data) - _FIELDS or _REQUIRED - set(data):
            raise ValueError("not a flip record")
        if type(data["doc_id"]) is not int or data["direction"] not in ("regressed", "improved"):
            raise ValueError("bad doc_id or direction")
        if not all(isinstance(data.get(key, ""), str) for key in _TEXTS):
            raise ValueError("a prompt, answer or target that is not text")
        if not all(type(data[key]) in (int, float) for key in _VALUES):
            raise ValueError("a score that is not a number")
        return cls(**data)


_TEXTS = ("prompt", "base_response", "finetuned_response", "target")
_VALUES = ("base_value", "finetuned_value")
_FIELDS = {"doc_id", "direction", *_TEXTS, *_VALUES}
_REQUIRED = _FIELDS - {"target"}


def find_flips(
    base: dict[int, SampleRecord], finetuned: dict[int, SampleRecord], higher_is_better: bool = True
) -> list[Flip]:
    """Every document on both sides whose value changed: regressions first, then by doc id.

    For pass/fail metrics that is pass→fail and fail→pass; for continuous ones any change, a
    regression when it goes against the metric's direction. Documents only one side scored are not flips.
    """
    flips = [
        _flip(base[doc_id], finetuned[doc_id], higher_is_better)
        for doc_id in base.keys() & finetuned.keys()
        if base[doc_id].value != finetuned[doc_id].value
    ]
    return sorted(flips, key=lambda flip: (flip.direction != "regressed", flip.doc_id))


def _flip(base: SampleRecord, finetuned: SampleRecord, higher_is_better: bool) -> Flip:
    went_up = finetuned.value > base.value
    return Flip(
        doc_id=base.doc_id,
        direction="improved" if went_up == higher_is_better else "regressed",
        # The prompt is the same document on both sides; the base's is as good as any.
        prompt=base.prompt or finetuned.prompt,
        base_response=base.response,
        finetuned_response=finetuned.response,
        base_value=base.value,
        finetuned_value=finetuned.value,
        target=base.target or finetuned.target,
    )


def write_flips(path: Path, flips: list[Flip]) -> None:
    """Write one JSON object per line (an empty file for no flips), all at once or not at all."""
    text = "".join(json.dumps(flip.to_json(), ensure_ascii=False) + "\n" for flip in flips)
    atomic_write_text(path, text)


def read_flips(path: Path) -> tuple[list[Flip], int]:
    """The flips `write_flips` wrote to `path`, and how many lines were unreadable and skipped.

    Lines are split on "\\n" alone: records hold model output as written (ensure_ascii=False), where
    U+2028, U+0085 or a lone carriage return are text, not line breaks. OSError when it cannot be read.
    """
    flips: list[Flip] = []
    skipped = 0
    for line in path.read_bytes().decode("utf-8", errors="replace").split("\n"):
        if not line.strip():
            continue
        try:
            flips.append(Flip.from_json(json.loads(line)))
        except (ValueError, RecursionError):
            skipped += 1
    return flips, skipped


def format_flips(flips: list[Flip], limit: int = 3) -> str:
    """The first `limit` flips as a short block for a failure message; "" when there are none.

    doc 12 pass→fail
      prompt: Write a haiku about ...
      base: Leaves fall ...
      fine-tuned: Sure! Here is ...
    """
    blocks = [_format_flip(flip) for flip in flips[: max(limit, 0)]]
    hidden = len(flips) - len(blocks)
    if hidden > 0:
        blocks.append(f"... and {hidden} more flipped document{'s' if hidden != 1 else ''}")
    return "\n".join(blocks)


def _format_flip(flip: Flip) -> str:
    return "\n".join(
        (
            f"doc {flip.doc_id} {_transition(flip)}",
            f"  prompt: {_shorten(flip.prompt)}",
            f"  base: {_shorten(flip.base_response)}",
            f"  fine-tuned: {_shorten(flip.finetuned_response)}",
        )
    )


def _transition(flip: Flip) -> str:
    """pass→fail for a 0/1 score; the values themselves otherwise, and where 1 is the bad outcome (an error)."""
    one_is_pass = (flip.direction == "regressed") == (flip.finetuned_value < flip.base_value)
    if one_is_pass and _is_pass_fail(flip.base_value) and _is_pass_fail(flip.finetuned_value):
        return f"{_pass_fail(flip.base_value)}→{_pass_fail(flip.finetuned_value)}"
    return f"{flip.base_value:.3g}→{flip.finetuned_value:.3g}"


def _is_pass_fail(value: float) -> bool:
    return value in (0.0, 1.0)


def _pass_fail(value: float) -> str:
    return "pass" if value == 1.0 else "fail"


def _shorten(text: str) -> str:
    """One line of at most ~200 characters; newlines (and every other control or format character) shown as
    escapes, so the block keeps its shape and model output cannot drive the terminal."""
    one_line = printable(text.replace("\r\n", "\n"))
    if len(one_line) <= _MAX_SHOWN_CHARS:
        return one_line
    return one_line[: _MAX_SHOWN_CHARS - 1].rstrip() + "…"
