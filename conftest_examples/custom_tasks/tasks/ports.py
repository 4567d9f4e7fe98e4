"""Helpers of the port_numbers task: the prompt, and whether the reply names the right port."""

import re
from typing import Any


def doc_to_text(doc: dict[str, Any]) -> str:
    return f"Which TCP port does {doc['service']} use by default? Answer with the number.\nPort:"


def process_results(doc: dict[str, Any], results: list[str]) -> dict[str, float]:
    # The first number in the reply is its answer; "443." and "port 443" both count.
    numbers = re.findall(r"\d+", results[0])
    return {"port_named": float(bool(numbers) and numbers[0] == str(doc["port"]))}
