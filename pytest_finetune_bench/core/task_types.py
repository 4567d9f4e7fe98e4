"""What kind of requests a task sends the model (lm-eval's `output_type`), read from the task index.

Backends use it to refuse tasks they cannot score faithfully: a chat server returns text, not the
log-likelihood of a given continuation, so HellaSwag or MMLU there would crash or score at chance.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Output types scored from log-likelihoods of the prompt's continuations, not from generated text.
LOGLIKELIHOOD_TYPES = frozenset({"loglikelihood", "loglikelihood_rolling", "multiple_choice"})
UNKNOWN = "unknown"  # Python-defined tasks declare their type in code


def output_types(name: str, index: Mapping[str, Any]) -> frozenset[str]:
    """Every output type among the leaf tasks behind `name` (a task, a group or a tag)."""
    return frozenset(_leaf_types(name, index, seen=set()))


def _leaf_types(name: str, index: Mapping[str, Any], seen: set[str]) -> Iterator[str]:
    if name in seen:
        return
    seen.add(name)
    entry = index.get(name)
    if entry is None:
        yield UNKNOWN
        return
    kind = entry.kind.name
    if kind == "TAG":
        for child in sorted(entry.tags):
            yield from _leaf_types(child, index, seen)
    elif kind == "GROUP":
        yield from _group_types((entry.cfg or {}).get("task"), index, seen)
    else:
        yield str((entry.cfg or {}).get("output_type") or UNKNOWN)


def _group_types(members: Any, index: Mapping[str, Any], seen: set[str]) -> Iterator[str]:
    """Types of a group's members, which may be names, inline sub-groups or inline task configs."""
    for member in members if isinstance(members, list) else [members]:
        if isinstance(member, str):
            yield from _leaf_types(member, index, seen)
        elif isinstance(member, dict) and "group" in member:
            yield from _group_types(member.get("task"), index, seen)
        elif isinstance(member, dict):
            inline = member.get("output_type")
            yield from [str(inline)] if inline else _leaf_types(str(member.get("task")), index, seen)
