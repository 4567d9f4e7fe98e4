"""A fine-tune as the pipeline saved it: a LoRA adapter alone, a chosen export, and models that ship their own code.

The real path: the demo's genuine LoRA evaluated from `lora/` alone (lm-eval's `peft=`), equal to lm-eval's CLI on
both sides, its caches apart from the merged export's and from a changed adapter's; and a tiny model whose class
lives in its own folder, refused without --bench-trust-remote-code and evaluated with it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import get_backend
from pytest_finetune_bench.backends.hf import check_custom_code
from pytest_finetune_bench.backends.vllm import VLLMBackend, lora_rank_slot
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.models import available_variants, locate_model
from pytest_finetune_bench.plan.planner import make_plan
from pytest_finetune_bench.plan.tasks import TaskCatalog
from pytest_finetune_bench.store.files import bench_cache_dir
from tests.bench_sessions import Session, assert_scores_equal_the_lm_eval_cli, run_bench
from tests.demo_fixtures import demo_model  # noqa: F401 - session fixture: the built demo

CUSTOM_CODE = Path(__file__).parent / "custom_code_model"


def adapter(folder: Path, base: str, weights: bytes = b"w", tokenizer: bool = False) -> Path:
    """A LoRA adapter folder as PEFT saves it (config + weights), on `base`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": 16}))
    (folder / "adapter_model.safetensors").write_bytes(weights)
    if tokenizer:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    return folder


def model_folder(folder: Path, config: dict[str, object] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config or {"model_type": "llama"}))
    return folder


@pytest.fixture(scope="module")
def catalog() -> TaskCatalog:
    return TaskCatalog(bench_cache_dir())


# --------------------------------------------------------------------------- finding the export
def test_an_adapter_alone_is_the_default_export(tmp_path: Path) -> None:
    lora = adapter(tmp_path / "outputs" / "x" / "lora", "org/base")
    location = locate_model("outputs/x", tmp_path)
    assert (location.variant, location.adapter, location.hf_path) == ("lora", lora, None)
    # The adapter folder itself names its experiment.
    direct = locate_model("outputs/x/lora", tmp_path)
    assert (direct.variant, direct.adapter, direct.name) == ("lora", lora, "x")


def test_an_adapter_config_without_weights_is_not_an_adapter(tmp_path: Path) -> None:
    lora = adapter(tmp_path / "x" / "lora", "org/base")
    (lora / "adapter_model.safetensors").unlink()
    location = locate_model("x", tmp_path)
    assert (location.variant, location.adapter) == ("none", None)
    with pytest.raises(BenchError, match=r"No merged model or LoRA adapter found .* lora/adapter_model.safetensors"):
        location.require_hf()


def test_the_merged_export_stays_the_default_and_variant_picks_another(tmp_path: Path) -> None:
    root = tmp_path / "x"
    lora = adapter(root / "lora", "org/base")
    model_folder(root / "merged_16bit")
    model_folder(root / "merged_4bit")
    (root / "gguf").mkdir()
    (root / "gguf" / "m.Q4_K_M.gguf").write_bytes(b"GGUF")
    assert available_variants(root) == ("lora", "merged_16bit", "merged_4bit", "gguf")
    assert locate_model("x", tmp_path).variant == "merged_16bit"
    picked = {v: locate_model("x", tmp_path, v) for v in available_variants(root)}
    assert picked["lora"].adapter == lora and picked["lora"].hf_path is None
    assert picked["merged_4bit"].hf_path == str(root / "merged_4bit")
    assert picked["gguf"].hf_path is None and picked["gguf"].gguf_files


def test_a_missing_variant_names_what_the_folder_has(tmp_path: Path) -> None:
    model_folder(tmp_path / "x" / "merged_16bit")
    with pytest.raises(BenchError, match=r"--bench-variant lora: .* has no lora export \(it holds: merged_16bit\)"):
        locate_model("x", tmp_path, "lora")
    with pytest.raises(BenchError, match="is a Hub id: drop --bench-variant"):
        locate_model("org/model", tmp_path, "merged_16bit")


# --------------------------------------------------------------------------- the plan of an adapter
def test_adapter_plan_loads_the_base_with_peft_and_its_tokenizer(tmp_path: Path, catalog: TaskCatalog) -> None:
    base = model_folder(tmp_path / "base")
    lora = adapter(tmp_path / "outputs" / "x" / "lora", str(base), tokenizer=True)
    plan = make_plan(BenchOptions(model="outputs/x", device="cpu", chat_template="off"), tmp_path, print, catalog)
    assert plan.variant == "lora" and plan.finetuned is not None and plan.base is not None
    assert plan.finetuned.model == str(lora)
    assert plan.finetuned.model_args == f"pretrained={base},dtype=float32,peft={lora},tokenizer={lora}"
    assert plan.base.model_args == f"pretrained={base},dtype=float32"


def test_adapter_fingerprint_covers_the_adapter_and_the_base(tmp_path: Path, catalog: TaskCatalog) -> None:
    base = model_folder(tmp_path / "base")
    root = tmp_path / "outputs" / "x"
    lora = adapter(root / "lora", str(base))
    model_folder(root / "merged_16bit")

    def fingerprint(variant: str | None = None, base_option: str | None = None) -> str | None:
        options = BenchOptions(model="outputs/x", variant=variant, base=base_option, device="cpu")
        finetuned = make_plan(options, tmp_path, print, catalog).finetuned
        assert finetuned is not None
        return finetuned.fingerprint

    first = fingerprint("lora")
    assert first is not None
    assert fingerprint("lora") == first
    assert fingerprint() != first  # the merged export of the same experiment
    (lora / "adapter_model.safetensors").write_bytes(b"other weights")
    changed = fingerprint("lora")
    assert changed != first
    other_base = model_folder(tmp_path / "other-base", {"model_type": "llama", "hidden_size": 8})
    assert fingerprint("lora", str(other_base)) not in (first, changed)


def test_adapter_with_bench_base_none_is_applied_on_the_configs_base(tmp_path: Path, catalog: TaskCatalog) -> None:
    base = model_folder(tmp_path / "base")
    adapter(tmp_path / "x" / "lora", str(base))
    plan = make_plan(BenchOptions(model="x", base="none", device="cpu"), tmp_path, print, catalog)
    assert plan.base is None and plan.finetuned is not None
    assert plan.finetuned.model_args.startswith(f"pretrained={base},")


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_servers_refuse_an_adapter_only_folder(tmp_path: Path, catalog: TaskCatalog, backend: str) -> None:
    adapter(tmp_path / "x" / "lora", "org/base")
    options = BenchOptions(model="x", backend=backend, base="served-base", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(BenchError, match=f"the {backend} backend serves whole models by name and cannot apply"):
        make_plan(options, tmp_path, print, catalog)


def test_vllm_serves_the_adapter_in_a_slot_of_its_rank(tmp_path: Path) -> None:
    lora = adapter(tmp_path / "lora", "org/base")
    assert VLLMBackend().adapter_args(lora) == {"lora_local_path": str(lora), "max_lora_rank": "16"}
    assert [lora_rank_slot(r) for r in (1, 8, 9, 64, 65, 512)] == [8, 8, 16, 64, 128, 512]
    with pytest.raises(BenchError, match="above vLLM's largest"):
        lora_rank_slot(1024)
    with pytest.raises(BenchError, match="cannot apply the LoRA adapter"):
        get_backend("openai", "http://127.0.0.1:9/v1").adapter_args(lora)


# --------------------------------------------------------------------------- custom code
def test_custom_code_is_refused_unless_trusted(tmp_path: Path) -> None:
    known = model_folder(tmp_path / "known", {"model_type": "llama", "auto_map": {"AutoModel": "m.M"}})
    own = model_folder(tmp_path / "own", {"model_type": "mine", "auto_map": {"AutoConfig": "configuration_mine.C"}})
    remote = model_folder(tmp_path / "remote", {"model_type": "x", "auto_map": {"AutoModel": "org/code--m.M"}})
    check_custom_code([(str(known), "base")], trusted=False)  # a type transformers knows loads with its classes
    with pytest.raises(BenchError, match=rf"the base model {own} runs its own Python code \(configuration_mine.C in "
                                         r".*\), which is loaded only with --bench-trust-remote-code"):
        check_custom_code([(str(own), "base")], trusted=False)
    with pytest.raises(BenchError, match=r"\(from org/code\)"):
        check_custom_code([(str(remote), "fine-tuned")], trusted=False)
    check_custom_code([(str(own), "base"), (str(remote), "fine-tuned")], trusted=True)


# --------------------------------------------------------------------------- real sessions
def _generated(session: Session, role: str) -> int:
    """Responses the model produced in `role`'s run (0 when lm-eval's response cache answered every request)."""
    found = re.findall(rf"\[bench\] {role}: done in .*?\((\d+) responses generated\)", session.proc.stdout)
    assert found, session.proc.stdout[-3000:]
    return int(found[-1])


@pytest.fixture(scope="module")
def lora_experiment(tmp_path_factory: pytest.TempPathFactory, demo_model: Path) -> Path:  # noqa: F811
    """The demo fine-tune as lora/ + merged_16bit/ (hard links: nothing is copied)."""
    root = tmp_path_factory.mktemp("adapter") / "outputs" / "demo-lora"
    for part in ("lora", "merged_16bit"):
        shutil.copytree(demo_model / part, root / part, copy_function=os.link)
    return root


@pytest.fixture(scope="module")
def adapter_session(tmp_path_factory: pytest.TempPathFactory, lora_experiment: Path, demo_data: Path) -> Session:
    """The demo LoRA from lora/ alone: its merged export moved out of the folder for this session."""
    merged = lora_experiment / "merged_16bit"
    aside = lora_experiment.parent / "merged-aside"
    merged.rename(aside)
    try:
        return run_bench(tmp_path_factory.mktemp("adapter-run"), lora_experiment, demo_data)
    finally:
        aside.rename(merged)


def test_an_adapter_alone_is_benchmarked_with_peft(adapter_session: Session, lora_experiment: Path) -> None:
    summary = adapter_session.summary
    assert summary["status"] == "complete", adapter_session.proc.stdout[-3000:]
    assert summary["model_variant"] == "lora"
    base = json.loads((lora_experiment / "lora" / "adapter_config.json").read_text())["base_model_name_or_path"]
    args = summary["reproduce"]["model_args"]["fine-tuned"]
    assert args.startswith(f"pretrained={base},") and f"peft={lora_experiment / 'lora'}" in args
    assert _generated(adapter_session, "fine-tuned") == summary["fine_tuned_model"]["results"]["ifeval"]["sample_len"]


def test_adapter_scores_equal_the_lm_eval_cli_with_peft(adapter_session: Session, tmp_path: Path) -> None:
    # The fine-tuned side only: the base side is plain SmolLM2 under test_end_to_end's very settings, whose
    # command tests/test_end_to_end.py already runs through the CLI.
    assert_scores_equal_the_lm_eval_cli(adapter_session.summary, "fine_tuned_model", tmp_path)


def test_adapter_runs_are_cached_apart_from_the_merge_and_from_a_changed_adapter(
    adapter_session: Session, lora_experiment: Path, demo_data: Path
) -> None:
    # Every session writes to the same results folder, so all of them see the same response caches.
    def session(*extra: str) -> tuple[int, dict[str, Any]]:
        done = run_bench(adapter_session.output.parent, lora_experiment, demo_data, *extra)
        summary = done.summary  # read now: the next session writes its own benchmark.json
        assert summary["status"] == "complete", done.proc.stdout[-3000:]
        return _generated(done, "fine-tuned"), summary

    first = adapter_session.summary
    documents = first["fine_tuned_model"]["results"]["ifeval"]["sample_len"]
    generated, again = session("--bench-variant", "lora")
    assert generated == 0  # the same adapter: every response comes from the cache
    generated, merged = session()  # the default export: merged_16bit/, the same fine-tune merged
    assert merged["model_variant"] == "merged_16bit" and generated == documents
    weights = lora_experiment / "lora" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.unlink()  # a hard link: replace the file, never write through to the demo's adapter
    weights.write_bytes(_scaled_safetensors(data))
    generated, changed = session("--bench-variant", "lora")
    assert generated == documents
    fingerprints = [s["reproduce"]["identity"]["fine-tuned"]["model_fingerprint"]
                    for s in (first, again, merged, changed)]
    assert fingerprints[0] == fingerprints[1] and len(set(fingerprints)) == 3


def _scaled_safetensors(data: bytes) -> bytes:
    """The same adapter with every LoRA B matrix doubled: another fine-tune, the same files and shapes."""
    from safetensors.torch import load, save

    tensors = load(data)
    return save({name: t * 2 if "lora_B" in name else t for name, t in tensors.items()})


@pytest.fixture(scope="module")
def custom_code_model(tmp_path_factory: pytest.TempPathFactory, base_model: Path) -> Path:
    """A two-layer model of a type only its own folder's code defines, with SmolLM2's tokenizer (random weights).

    Its classes subclass Llama's, so Llama's weights fit them; transformers reaches them only through auto_map.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("custom-code") / "bench-tiny"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(base_model).save_pretrained(folder)
    for file in CUSTOM_CODE.glob("*.py"):
        shutil.copy(file, folder / file.name)
    saved = json.loads((folder / "config.json").read_text())
    saved |= {"model_type": "bench-tiny", "architectures": ["BenchTinyForCausalLM"],
              "auto_map": {"AutoConfig": "configuration_bench_tiny.BenchTinyConfig",
                           "AutoModelForCausalLM": "modeling_bench_tiny.BenchTinyForCausalLM"}}
    (folder / "config.json").write_text(json.dumps(saved))
    return folder


def test_a_model_with_its_own_code_runs_only_with_the_switch(
    custom_code_model: Path, demo_data: Path, tmp_path: Path
) -> None:
    tiny = ("--bench-base", str(custom_code_model), "--bench-limit", "2", "--bench-gen-kwargs", "max_gen_toks=4")
    (tmp_path / "refused").mkdir()
    refused = run_bench(tmp_path / "refused", custom_code_model, demo_data, *tiny)
    assert refused.proc.returncode == pytest.ExitCode.USAGE_ERROR, refused.proc.stdout[-2000:]
    assert "--bench-trust-remote-code" in refused.proc.stderr and "Traceback" not in refused.proc.stderr
    assert not (refused.output / "benchmark.json").exists()
    (tmp_path / "trusted").mkdir()
    trusted = run_bench(tmp_path / "trusted", custom_code_model, demo_data, *tiny, "--bench-trust-remote-code")
    summary = trusted.summary
    assert summary["status"] == "complete", trusted.proc.stdout[-3000:]
    for role in ("base", "fine-tuned"):
        assert "trust_remote_code=True" in summary["reproduce"]["model_args"][role]
    assert summary["fine_tuned_model"]["results"]["ifeval"]["sample_len"] == 2
