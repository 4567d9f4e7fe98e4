"""Find what to benchmark in a user's `outputs/<name>/` folder (the Unsloth pipeline layout)."""

from __future__ import annotations

import glob
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends.hf import ADAPTER_CONFIG, ADAPTER_WEIGHTS

MERGED_VARIANTS = ("merged_16bit", "merged_4bit")
# What makes a folder an experiment, as the pipelines detect their outputs/<name>/ folders.
EXPERIMENT_PARTS = ("lora", *MERGED_VARIANTS, "gguf")
# What --bench-variant may pick; without it, a merged export wins, then the adapter, then the GGUF.
VARIANTS = ("lora", *MERGED_VARIANTS, "gguf")
_GLOB_CHARS = re.compile(r"[*?\[]")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelLocation:
    """One model as the user named it, and where each of its exports lives."""

    source: str
    name: str
    root: Path | None  # the outputs/<name> folder (or a plain model folder); None for a Hub id
    hf_path: str | None  # what transformers loads: a merged folder, a plain folder or a Hub id
    variant: str  # what is evaluated: merged_16bit | merged_4bit | lora | gguf | folder | hub | none
    gguf_files: tuple[Path, ...] = ()
    adapter: Path | None = None  # the LoRA adapter evaluated on its base (variant lora)

    def require_hf(self) -> str:
        if self.hf_path is None:
            looked = ", ".join(f"{v}/config.json" for v in MERGED_VARIANTS)
            weights = " or ".join(f"lora/{name}" for name in ADAPTER_WEIGHTS)
            raise BenchError(
                f"No merged model or LoRA adapter found in {self.root} (looked for {looked}, and "
                f"lora/{ADAPTER_CONFIG} with {weights}): save the fine-tune there, "
                "or use --bench-backend ollama for its GGUF"
            )
        return self.hf_path


def locate_model(spec: str, cwd: Path, variant: str | None = None) -> ModelLocation:
    """Resolve --bench-model: an outputs/<name> folder, a plain HF model folder, a LoRA adapter folder, or a Hub id.

    `variant` (--bench-variant) picks one export of an outputs/<name> folder; None picks the default.
    """
    path = (cwd / spec).expanduser() if not Path(spec).is_absolute() else Path(spec)
    if path.is_dir():
        location = _locate_folder(spec, path.resolve())
        return location if variant is None else _pick_variant(location, variant)
    if path.exists():
        raise BenchError(f"--bench-model {spec} is a file: point it at the model folder (outputs/<name>)")
    # outputs/my-modle is a typo when outputs/ is here, not a Hub id.
    local_parent = (cwd / spec.split("/", 1)[0]).is_dir()
    if _HUB_ID.match(spec) and not spec.startswith((".", "~")) and not local_parent:
        if variant is not None:
            raise BenchError(f"--bench-variant {variant} picks an export of an outputs/<name> folder, and "
                             f"{spec} is a Hub id: drop --bench-variant, or download the model's folder")
        return ModelLocation(source=spec, name=spec, root=None, hf_path=spec, variant="hub")
    raise BenchError(f"--bench-model {spec} does not exist: pass an outputs/<name> folder, a model folder or a Hub id")


def _locate_folder(spec: str, root: Path) -> ModelLocation:
    """The default export of a folder: a plain model, a merged export, an adapter, then (served) a GGUF."""
    gguf = tuple(sorted((root / "gguf").glob("*.gguf"))) if (root / "gguf").is_dir() else ()
    gguf = gguf or tuple(sorted(root.glob("*.gguf")))
    if (root / "config.json").is_file():
        return ModelLocation(spec, root.name, root, str(root), "folder", gguf)
    for variant in MERGED_VARIANTS:
        if (root / variant / "config.json").is_file():
            return ModelLocation(spec, root.name, root, str(root / variant), variant, gguf)
    adapter = find_adapter(root)
    if adapter is not None:
        # A folder that is the adapter itself (outputs/x/lora) is named after its experiment.
        name = root.parent.name if adapter == root and root.name == "lora" else root.name
        return ModelLocation(spec, name, root, None, "lora", gguf, adapter)
    return ModelLocation(spec, root.name, root, None, "gguf" if gguf else "none", gguf)


def find_adapter(root: Path) -> Path | None:
    """The LoRA adapter of an experiment: `lora/` (or the folder itself) with its config and its weights."""
    for folder in (root / "lora", root):
        if (folder / ADAPTER_CONFIG).is_file() and any((folder / name).is_file() for name in ADAPTER_WEIGHTS):
            return folder
    return None


def _pick_variant(location: ModelLocation, variant: str) -> ModelLocation:
    """The export --bench-variant names; a one-line error listing what the folder holds when it is missing."""
    root = location.root
    assert root is not None
    if variant == "lora":
        adapter = find_adapter(root)
        found = adapter is not None
        picked = replace(location, hf_path=None, variant="lora", adapter=adapter)
    elif variant == "gguf":
        found = bool(location.gguf_files)
        picked = replace(location, hf_path=None, variant="gguf", adapter=None)
    else:
        found = (root / variant / "config.json").is_file()
        picked = replace(location, hf_path=str(root / variant), variant=variant, adapter=None)
    if not found:
        held = ", ".join(available_variants(root)) or "none of them"
        raise BenchError(f"--bench-variant {variant}: {root} has no {variant} export (it holds: {held}); "
                         "pick one it has, or drop --bench-variant for the default")
    return picked


def available_variants(root: Path) -> tuple[str, ...]:
    """The exports of an outputs/<name> folder that --bench-variant can pick, in VARIANTS order."""
    present = {
        "lora": find_adapter(root) is not None,
        "gguf": any((root / "gguf").glob("*.gguf")) or any(root.glob("*.gguf")),
        **{v: (root / v / "config.json").is_file() for v in MERGED_VARIANTS},
    }
    return tuple(v for v in VARIANTS if present[v])


def detect_base(location: ModelLocation) -> tuple[str, str] | None:
    """(base model, where it was found), from lora/adapter_config.json then lora/training_metrics.json."""
    if location.root is None:
        return None
    candidates = (
        ("lora/adapter_config.json", "base_model_name_or_path"),
        ("adapter_config.json", "base_model_name_or_path"),
        ("lora/training_metrics.json", "model_name"),
        ("training_metrics.json", "model_name"),
    )
    for relative, key in candidates:
        file = location.root / relative
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            raise BenchError(f"{file} is not valid JSON: fix or delete it, or pass --bench-base") from None
        if isinstance(value, str) and value.strip():
            return value.strip(), f"{relative}:{key}"
    return None


def resolve_base(value: str, location: ModelLocation, cwd: Path) -> str:
    """A base given as a relative path may be relative to the working directory or the model folder."""
    for anchor in (cwd, location.root):
        if anchor is not None and not Path(value).is_absolute() and (anchor / value).is_dir():
            return str((anchor / value).resolve())
    if Path(value).expanduser().is_dir():
        return str(Path(value).expanduser().resolve())
    if _HUB_ID.match(value):
        return value
    raise BenchError(f"base model {value!r} is neither a model folder nor a Hub id: pass --bench-base PATH_OR_ID")


def is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub model id (`org/name`) rather than a folder (a resolved base is absolute)."""
    return bool(_HUB_ID.match(name)) and not Path(name).expanduser().is_absolute()


def is_experiment(folder: Path) -> bool:
    """Whether `folder` is one fine-tune: the pipeline layout (lora/, merged_*/, gguf/) or a plain model folder."""
    return (folder / "config.json").is_file() or any((folder / part).is_dir() for part in EXPERIMENT_PARTS)


def expand_models(specs: tuple[str, ...], cwd: Path) -> tuple[str, ...]:
    """Every model the --bench-model values name, in order, each once.

    A value is a model (folder or Hub id), a glob over folders (`outputs/*`), or a folder of
    experiments: a folder that is no model itself but holds some, each of which is benchmarked.
    """
    found: dict[str, str] = {}  # resolved location → the spelling shown to the user
    for spec in specs:
        for model in _expand_one(spec.strip(), cwd):
            path = cwd / model
            found.setdefault(str(path.resolve()) if path.is_dir() else model, model)
    return tuple(found.values())


def _expand_one(spec: str, cwd: Path) -> list[str]:
    if _GLOB_CHARS.search(spec):
        matches = sorted(glob.glob(spec, root_dir=cwd)) if not Path(spec).is_absolute() else sorted(glob.glob(spec))
        models = [m for m in matches if is_experiment(cwd / m)]
        if not models:
            raise BenchError(f"--bench-model {spec} matches no model folder (one with lora/, merged_16bit/, "
                             "merged_4bit/, gguf/ or config.json): check the pattern, and quote it for the shell")
        return models
    folder = cwd / spec
    if folder.is_dir() and not is_experiment(folder) and not any(folder.glob("*.gguf")):
        children = sorted(child.name for child in folder.iterdir() if child.is_dir() and is_experiment(child))
        if children:
            return [str(Path(spec) / name) for name in children]
    return [spec]
