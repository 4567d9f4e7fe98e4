"""A model type transformers does not know: its config class ships in the model folder (auto_map)."""

from transformers import LlamaConfig


class BenchTinyConfig(LlamaConfig):  # type: ignore[no-untyped-call]  # transformers: untyped __init_subclass__
    model_type = "bench-tiny"
