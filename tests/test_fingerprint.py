"""A model's identity is its exact bytes: any edit re-evaluates, an unchanged model is not re-read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_finetune_bench.store.fingerprint import DigestIndex, model_fingerprint
from tests.fake_sessions import LIMIT, bench_args, make_fake_model, read_summary, use_fake_lm

WEIGHTS_BYTES = 20 << 20  # above the size from which digests are indexed


def _weights(folder: Path) -> Path:
    path = folder / "model.safetensors"
    path.write_bytes(os.urandom(WEIGHTS_BYTES))
    return path


def edit_in_place_keeping_mtime(path: Path, offset: int) -> None:
    """Change one byte where no sampling fingerprint would look, at the same size, mtime restored."""
    before = path.stat()
    with path.open("r+b") as fh:
        fh.seek(offset)
        old = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([old[0] ^ 0xFF]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_one_changed_byte_changes_the_fingerprint(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    weights = _weights(model)
    first = model_fingerprint(str(model), tmp_path / "index")
    edit_in_place_keeping_mtime(weights, offset=5 << 20)
    assert model_fingerprint(str(model), tmp_path / "index") != first


def test_an_unchanged_model_is_served_from_the_index(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    weights = _weights(model)
    first = DigestIndex(tmp_path)
    digest = first.digest(weights)
    first.save()
    again = DigestIndex(tmp_path)
    assert again.digest(weights) == digest and again.hashed == []  # not read again
    edit_in_place_keeping_mtime(weights, offset=123)
    assert DigestIndex(tmp_path).digest(weights) != digest


@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_a_re_merged_model_is_evaluated_afresh(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real lm-eval, real bytes: the edited model's answers never come from the old model's response cache."""
    model = make_fake_model(pytester.path)
    weights = _weights(model / "merged_16bit")
    use_fake_lm(monkeypatch)
    out = pytester.path / "out"
    first = pytester.runpytest_subprocess(*bench_args(model, out, "--bench-min-gain=0"))
    first.assert_outcomes(passed=2)
    assert read_summary(out / "benchmark.json")["fine_tuned_model"]["generated"] == LIMIT
    edit_in_place_keeping_mtime(weights, offset=7 << 20)
    second = pytester.runpytest_subprocess(*bench_args(model, out, "--bench-min-gain=0"))
    second.assert_outcomes(passed=2)
    assert read_summary(out / "benchmark.json")["fine_tuned_model"]["generated"] == LIMIT  # all generated anew
