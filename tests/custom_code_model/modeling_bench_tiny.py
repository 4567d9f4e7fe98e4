"""The model class of `bench-tiny`: Llama's, under a name only this folder's code defines."""

from transformers import LlamaForCausalLM

from .configuration_bench_tiny import BenchTinyConfig


class BenchTinyForCausalLM(LlamaForCausalLM):  # type: ignore[no-untyped-call]  # transformers: untyped __init_subclass__
    config_class = BenchTinyConfig
