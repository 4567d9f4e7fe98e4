"""Start llama-cpp-python's OpenAI-compatible server (same arguments) without llama.cpp's weight repacking.

llama.cpp repacks weights into "extra buffer types" (AMX tiles on Sapphire Rapids CPUs); its AMX
matrix multiply segfaults on the first inference on some of those machines (llama.cpp issue #20824),
which the test machines are. The repacking is a layout optimisation: without it the server computes
the same model the plain CPU way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import llama_cpp.llama_cpp as low_level


def without_extra_buffer_types() -> None:
    """Make every model the server loads keep its weights in the plain CPU buffer."""
    defaults = low_level.llama_model_default_params

    def params() -> Any:
        chosen = defaults()
        chosen.use_extra_bufts = False
        return chosen

    low_level.llama_model_default_params = params


if __name__ == "__main__":
    without_extra_buffer_types()
    from llama_cpp.server.__main__ import main

    cast("Callable[[], None]", main)()  # llama_cpp's main is untyped where it is installed
