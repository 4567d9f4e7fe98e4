"""Every reader of a file the plugin wrote, fed corrupted and truncated copies (issue 22).

Each reader either recomputes (caches), skips with a note (flips, history), or stops with a one-line
error naming the file (summaries, samples); none raises anything else, and none runs code. The files
start as real ones (tests/golden, a stored cache entry, a real task index) and are damaged byte by
byte or value by value. Hypothesis keeps the examples few and the whole module fast (no model).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import lm_eval.tasks
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_finetune_bench import BenchError, cli
from pytest_finetune_bench.compare.flips import Flip, read_flips
from pytest_finetune_bench.compare.samples import load_samples
from pytest_finetune_bench.plan import tasks
from pytest_finetune_bench.plan.tasks import INDEX_CACHE_DIR, load_task_index
from pytest_finetune_bench.store.base_cache import BaseCache
from pytest_finetune_bench.store.fingerprint import INDEX_NAME, DigestIndex
from pytest_finetune_bench.store.reference import load_reference
from pytest_finetune_bench.store.summaries import latest_complete_run
from tests.test_basecache import KEY, fake_run
from tests.test_reports import GOLDEN, GOLDEN_ROOT, GOLDEN_RUN
from tests.test_trust import CountingTaskManager

FUZZ = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
RUN = Path("benchmarks") / "fine-tuned" / GOLDEN_RUN
TRICKY = [b"\n", b"\r", b"\x00", b"\xff\xfe", "\u2028".encode(), "\x85".encode(), b'"', b"{", b"}", b"]", b",",
          b"NaN", b"1e999", b"-0", b"[[[[[[[[", b"\\u", b"\\ud800"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | st.sampled_from(
        ["/etc/hostname", "../../x", ".", "", "a/b", "\x1b[2J", "<script>", "$\\frac$", "complete"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*prefix, index))


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    """`original` (JSON or JSON lines) truncated, with bytes changed or inserted, or one value replaced."""
    how = draw(st.sampled_from(["truncate", "bytes", "insert", "value", "value"]))
    if how == "truncate":
        return original[:draw(st.integers(0, max(len(original) - 1, 0)))]
    if how in ("bytes", "insert"):
        data = bytearray(original)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            piece = draw(st.sampled_from(TRICKY)) if how == "insert" else bytes([draw(st.integers(0, 255))])
            data[at:at + (0 if how == "insert" else 1)] = piece
        return bytes(data)
    try:
        lines = [json.dumps(json.loads(original)).encode()]  # one JSON document
    except ValueError:
        lines = original.split(b"\n")  # JSON lines
    parsed = [(n, json.loads(line)) for n, line in enumerate(lines) if line.strip()]
    n, doc = draw(st.sampled_from(parsed))
    paths = list(_paths(doc))
    # Half the time a top-level part (a whole section of the file), else any value however deep.
    path = draw(st.sampled_from([p for p in paths if len(p) <= 2]) | st.sampled_from(paths))
    lines[n] = json.dumps(_replaced(doc, path, draw(json_values)), ensure_ascii=False).encode()
    return b"\n".join(lines)


def one_line_naming(exc: BenchError, *names: Path) -> None:
    message = str(exc)
    assert "\n" not in message and "\r" not in message
    assert any(str(name) in message for name in names), message


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def golden_copy(folder: Path) -> Path:
    """A copy of the golden model folder whose summaries name the copy's files."""
    model = folder / "model"
    if not model.exists():
        shutil.copytree(GOLDEN / "model", model)
        for summary in model.rglob("benchmark.json"):
            summary.write_text(summary.read_text().replace(f'"{GOLDEN_ROOT}/', f'"{model}/'))
    return model


# ---------------------------------------------------------------------------------------------- caches


@pytest.fixture(scope="module")
def index_bytes(folder: Path) -> bytes:
    with _small_task_index():
        load_task_index(folder / "index-source")
    (stored,) = (folder / "index-source" / INDEX_CACHE_DIR).glob("*.jsonl")
    return stored.read_bytes()


@contextlib.contextmanager
def _small_task_index() -> Iterator[None]:
    with mock.patch.object(lm_eval.tasks, "TaskManager", CountingTaskManager), \
            mock.patch.object(tasks, "_installed_release", lambda version: f"{version}@fuzz"):
        yield


@FUZZ
@given(data=st.data())
def test_a_damaged_task_index_is_rebuilt(folder: Path, index_bytes: bytes, data: st.DataObject) -> None:
    cache = folder / "index"
    shutil.rmtree(cache, ignore_errors=True)
    (cache / INDEX_CACHE_DIR).mkdir(parents=True, mode=0o700)
    (cache / INDEX_CACHE_DIR / next((folder / "index-source" / INDEX_CACHE_DIR).glob("*.jsonl")).name).write_bytes(
        data.draw(damaged(index_bytes)))
    with _small_task_index():
        index = load_task_index(cache)
    root = Path(lm_eval.tasks.__file__).parent
    assert "arc_easy" in index  # rebuilt, or read back whole
    assert all(entry.yaml_path is None or entry.yaml_path.is_relative_to(root) for entry in index.values())


@FUZZ
@given(data=st.data())
def test_a_damaged_base_cache_entry_is_recomputed(folder: Path, data: st.DataObject) -> None:
    root = folder / "base-cache"
    shutil.rmtree(root, ignore_errors=True)
    cache = BaseCache(root)
    entry = cache.store(KEY, fake_run(folder / "run"))
    name = data.draw(st.sampled_from(["entry.json", "results", "samples"]))
    target = entry / name if name == "entry.json" else next(entry.glob(f"{name}_*"))
    target.write_bytes(data.draw(damaged(target.read_bytes())))
    cached, reason = cache.load(KEY)
    assert (cached is None) == bool(reason) or (cached is None and reason is None)
    if cached is not None:
        files = [cached.results_file, *cached.samples_files.values()]
        assert all(f.parent == entry and f.is_file() for f in files)


@FUZZ
@given(data=st.data())
def test_a_damaged_digest_index_is_recomputed(folder: Path, data: st.DataObject) -> None:
    index_dir = folder / "digests"
    index_dir.mkdir(exist_ok=True)
    good = {f"/m/w{i}.safetensors|1|2|3|4": f"{i:064x}" for i in range(3)}
    (index_dir / INDEX_NAME).write_bytes(data.draw(damaged(json.dumps(good, indent=1).encode())))
    (index_dir / INDEX_NAME).chmod(0o600)
    entries = DigestIndex(index_dir).entries
    assert all(isinstance(k, str) and len(v) == 64 and int(v, 16) >= 0 for k, v in entries.items())


# ------------------------------------------------------------------------------------------ run files


@FUZZ
@given(data=st.data())
def test_a_damaged_flips_file_is_read_as_far_as_it_goes(folder: Path, data: st.DataObject) -> None:
    source = GOLDEN / "model" / RUN / "flips_ifeval.jsonl"
    damaged_file = folder / "flips.jsonl"
    damaged_file.write_bytes(data.draw(damaged(source.read_bytes())))
    flips, skipped = read_flips(damaged_file)
    assert all(isinstance(flip, Flip) and type(flip.doc_id) is int for flip in flips)
    assert len(flips) + skipped <= damaged_file.read_bytes().count(b"\n") + 1


@FUZZ
@given(data=st.data())
def test_a_damaged_samples_file_names_its_line(folder: Path, data: st.DataObject) -> None:
    source = next((GOLDEN / "model" / RUN / "lm-eval").glob("samples_*.jsonl"))
    damaged_file = folder / source.name
    damaged_file.write_bytes(data.draw(damaged(source.read_bytes())))
    try:
        load_samples(damaged_file, "prompt_level_strict_acc,none")
    except BenchError as exc:
        one_line_naming(exc, damaged_file)


# ------------------------------------------------------------------------------------------- summaries


def run_command(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return code, err.getvalue()


@FUZZ
@given(data=st.data(), command=st.sampled_from(["report", "readme", "summary", "history"]))
def test_commands_on_a_damaged_summary_work_or_say_which_file(folder: Path, data: st.DataObject,
                                                              command: str) -> None:
    model = golden_copy(folder)
    latest, in_run = model / "benchmarks" / "benchmark.json", model / RUN / "benchmark.json"
    original = (GOLDEN / "model" / "benchmarks" / "benchmark.json").read_text().replace(
        f'"{GOLDEN_ROOT}/', f'"{model}/').encode()
    damaged_bytes = data.draw(damaged(original))
    for file in (latest, in_run):
        file.write_bytes(damaged_bytes)
    code, err = run_command(command, str(model))
    lines = err.splitlines()
    if command == "history":
        assert code in (0, 2) and all(line.startswith("skipped ") for line in lines[:-1] if code == 2)
        assert code == 0 or str(model) in lines[-1]
    else:
        assert code in (0, 2), err
        assert (code == 0) == (not lines), err
        assert code == 0 or (len(lines) == 1 and str(model) in lines[0]), err
    assert "Traceback" not in err


@FUZZ
@given(data=st.data())
def test_a_damaged_run_summary_is_skipped_when_looking_for_the_last_complete_run(folder: Path,
                                                                                 data: st.DataObject) -> None:
    output = folder / "summaries"
    run = output / "fine-tuned" / GOLDEN_RUN
    run.mkdir(parents=True, exist_ok=True)
    source = (GOLDEN / "model" / RUN / "benchmark.json").read_bytes()
    (run / "benchmark.json").write_bytes(data.draw(damaged(source)))
    assert latest_complete_run(output) in (None, run)


@FUZZ
@given(data=st.data())
def test_a_damaged_reference_run_is_refused_in_one_line(folder: Path, data: st.DataObject) -> None:
    model = golden_copy(folder)
    reference = folder / "reference.json"
    original = (GOLDEN / "model" / RUN / "benchmark.json").read_text().replace(
        f'"{GOLDEN_ROOT}/', f'"{model}/').encode()
    reference.write_bytes(data.draw(damaged(original)))
    try:
        load_reference(reference)
    except BenchError as exc:
        one_line_naming(exc, reference, model)
