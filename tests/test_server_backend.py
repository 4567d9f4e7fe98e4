"""Server backends (issue 5): GGUF models behind Ollama or any OpenAI-compatible server.

The end-to-end test runs against a real llama.cpp server (tests/llama_server.py) and checks the
plugin's scores against the `lm_eval` CLI's. Ollama-only endpoints (/api/tags) are exercised
against OllamaStub, a small local HTTP stand-in, since Ollama itself is not installed here.
"""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from pytest_finetune_bench import BenchError
from pytest_finetune_bench.backends import Backend, get_backend, openai
from pytest_finetune_bench.backends.ollama import OllamaBackend
from pytest_finetune_bench.backends.openai import (
    OpenAIBackend,
    api_root,
    check_base_url,
    cleartext_key_warning,
    served_name,
)
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.models import locate_model
from pytest_finetune_bench.plan.planner import (
    chat_template,
    finetuned_model,
    make_plan,
    pick_backends,
    resolve_base_model,
    task_plan,
)
from pytest_finetune_bench.plan.tasks import TaskCatalog
from pytest_finetune_bench.store.files import bench_cache_dir
from tests.conftest import read_json
from tests.llama_server import LlamaServer
from tests.loopback import Loopback

SECRET = "sk-test-d0-not-leak-7f3a91c2"  # an API key that must reach the server and no file
IFEVAL_METRICS = ("prompt_level_strict_acc,none", "inst_level_strict_acc,none",
                  "prompt_level_loose_acc,none", "inst_level_loose_acc,none")


# --------------------------------------------------------------------------- helpers
class OllamaStub(Loopback):
    """A stub of Ollama's HTTP API (not Ollama): /api/tags, /v1/models and a canned chat reply.

    It records every request's path and Authorization header so tests can see what reached it.
    """

    def __init__(self, models: dict[str, str], reply: str = "Hello. This is a short answer.") -> None:
        self.models = models  # served name -> digest
        self.reply = reply
        self.seen: list[tuple[str, str]] = []  # (path, Authorization header)
        self.status_override: int | None = None
        super().__init__(self._handler())

    def _answer(self, method: str, path: str) -> tuple[int, Any]:
        if self.status_override is not None:
            return self.status_override, {"error": "stubbed failure"}
        if method == "GET" and path == "/api/tags":
            return 200, {"models": [{"name": n, "model": n, "digest": d} for n, d in self.models.items()]}
        if method == "GET" and path == "/v1/models":
            return 200, {"object": "list", "data": [{"id": n, "object": "model"} for n in self.models]}
        if method == "POST" and path == "/v1/chat/completions":
            message = {"role": "assistant", "content": self.reply}
            return 200, {"object": "chat.completion", "choices": [{"index": 0, "message": message,
                                                                    "finish_reason": "stop"}]}
        return 404, {"error": "not found"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _respond(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                stub.seen.append((self.path, self.headers.get("Authorization", "")))
                status, body = stub._answer(method, self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._respond("GET")

            def do_POST(self) -> None:
                self._respond("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler



class SlowServer(Loopback):
    """A misbehaving HTTP server on 127.0.0.1: to each request it sends `head` at once, then `tail` in
    pieces of `piece` bytes `pace_s` apart. Bounded: it sends no more than that and stops when closed."""

    def __init__(self, head: bytes, tail: bytes, piece: int = 1, pace_s: float = 0.0) -> None:
        self.sent = 0  # bytes of `tail` sent, over all requests
        server = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # the request's headers
                try:
                    self.wfile.write(head)
                    for start in range(0, len(tail), piece):
                        if server.stopping.wait(pace_s):
                            return
                        self.wfile.write(tail[start:start + piece])
                        server.sent += len(tail[start:start + piece])
                except OSError:
                    return  # the client hung up

        super().__init__(Handler)


def closed_port_url() -> str:
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def gguf_outputs(root: Path, name: str, gguf: Path) -> Path:
    """outputs/<name>/ holding only a GGUF export (gguf/<file>.gguf, a symlink to `gguf`)."""
    folder = root / "outputs" / name / "gguf"
    folder.mkdir(parents=True)
    (folder / gguf.name).symlink_to(gguf)
    return folder.parent


def fake_gguf(root: Path, name: str) -> Path:
    """outputs/<name>/gguf/model.Q4_K_M.gguf with placeholder bytes (only its path matters)."""
    folder = root / "outputs" / name / "gguf"
    folder.mkdir(parents=True)
    (folder / "model.Q4_K_M.gguf").write_bytes(b"GGUF")
    return folder.parent


def files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def samples(path: Path) -> dict[int, list[Any]]:
    """doc_id -> the model's responses, from an lm-eval samples_*.jsonl file."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["doc_id"]: row["resps"] for row in rows}


@pytest.fixture(scope="module")
def catalog() -> TaskCatalog:
    """lm-eval's task index, built once for this module's sessions (it takes ~15 s)."""
    built = TaskCatalog(bench_cache_dir())
    built.index  # noqa: B018 - build it now, once
    return built


# --------------------------------------------------------------------------- addresses and names
@pytest.mark.parametrize(
    ("given", "root"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("http://127.0.0.1:8080/v1/chat/completions", "http://127.0.0.1:8080/v1"),
        ("https://example.com/v1beta/openai/", "https://example.com/v1beta/openai"),
    ],
)
def test_api_root_accepts_the_usual_spellings(given: str, root: str) -> None:
    assert api_root(given) == root


def test_credentials_in_the_url_are_refused_with_the_env_var_to_use() -> None:
    with pytest.raises(BenchError, match="put the API key in OPENAI_API_KEY"):
        check_base_url("https://user:sk-123@example.com/v1")
    with pytest.raises(BenchError, match="not an http"):
        check_base_url("localhost:11434")


def test_served_name_defaults_follow_the_folder_name() -> None:
    assert served_name("My_Model v2") == "my_model-v2"
    assert OllamaBackend("http://localhost:11434/v1").root == "http://localhost:11434"


def test_openai_backend_needs_a_url_and_model_args_carry_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BenchError, match="--bench-backend openai needs --bench-base-url"):
        get_backend("openai")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    backend = get_backend("openai", "http://127.0.0.1:9/v1", num_concurrent=4)
    args = backend.model_args("smol", None)  # type: ignore[arg-type]
    assert args == {"model": "smol", "base_url": "http://127.0.0.1:9/v1/chat/completions", "num_concurrent": "4",
                    "max_retries": "5", "tokenized_requests": "False"}
    assert SECRET not in json.dumps(args)


# --------------------------------------------------------------------------- pre-flight (stub)
def test_ollama_not_running_is_one_line_with_the_command() -> None:
    url = closed_port_url()
    with pytest.raises(BenchError) as info:
        OllamaBackend(url).preflight("smol", "fine-tuned")
    assert str(info.value) == f"Ollama is not running at {url}: start it with `ollama serve`"


def test_ollama_missing_finetuned_model_gives_the_create_command_and_writes_the_modelfile(tmp_path: Path) -> None:
    outputs = fake_gguf(tmp_path, "my-ft")
    gguf = outputs / "gguf" / "model.Q4_K_M.gguf"
    with OllamaStub({"llama3.2:1b": "sha256:aaa"}) as stub:
        with pytest.raises(BenchError) as info:
            OllamaBackend(stub.url).preflight("my-ft", "fine-tuned", [gguf])
    modelfile = outputs / "gguf" / "Modelfile"
    assert f"`ollama create my-ft -f {modelfile.resolve()}`" in str(info.value)
    assert "\n" not in str(info.value)
    assert modelfile.read_text() == "FROM ./model.Q4_K_M.gguf\n"


def test_ollama_keeps_an_existing_modelfile(tmp_path: Path) -> None:
    outputs = fake_gguf(tmp_path, "my-ft")
    (outputs / "gguf" / "Modelfile").write_text("FROM ./model.Q4_K_M.gguf\nTEMPLATE {{ .Prompt }}\n")
    with OllamaStub({}) as stub, pytest.raises(BenchError, match="ollama create my-ft -f"):
        OllamaBackend(stub.url).preflight("my-ft", "fine-tuned", [outputs / "gguf" / "model.Q4_K_M.gguf"])
    assert "TEMPLATE" in (outputs / "gguf" / "Modelfile").read_text()


def test_ollama_missing_base_gives_the_pull_command_and_present_models_pass() -> None:
    with OllamaStub({"my-ft:latest": "sha256:bbb"}) as stub:
        backend = OllamaBackend(stub.url)
        with pytest.raises(BenchError, match=r"run `ollama pull llama3.2:1b`.*installed: my-ft:latest"):
            backend.preflight("llama3.2:1b", "base")
        backend.preflight("my-ft", "fine-tuned")  # NAME answers for NAME:latest
    assert backend.fingerprint("my-ft", bench_cache_dir()) == "ollama:sha256:bbb"
    assert [path for path, _ in stub.seen] == ["/api/tags", "/api/tags"]


def test_openai_preflight_messages_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    url = closed_port_url()
    with pytest.raises(BenchError, match=rf"^no OpenAI-compatible server at {url}/v1: start it"):
        OpenAIBackend(url).preflight("smol", "fine-tuned")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OllamaStub({"served-a": "x"}) as stub:
        backend = OpenAIBackend(stub.url)
        missing = r"base model 'smol' is not served .*\(it serves: served-a\).*--bench-base"
        with pytest.raises(BenchError, match=missing):
            backend.preflight("smol", "base")
        backend.preflight("served-a", "fine-tuned")
        stub.status_override = 401
        with pytest.raises(BenchError, match=r"HTTP 401.*set OPENAI_API_KEY"):
            backend.preflight("served-a", "fine-tuned")
    assert stub.seen[0] == ("/v1/models", f"Bearer {SECRET}")
    assert backend.fingerprint("served-a", bench_cache_dir()) is None  # no content identity: no response cache


HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "tail"),
    [(HEADERS, b'{"data": [' + b" " * 200 + b"]}"),  # the body a byte at a time
     (b"HTTP/1.1 200 OK\r\n", b"X-Padding: " + b"a" * 200 + b"\r\n\r\n{}")],  # even the headers
    ids=["body", "headers"],
)
def test_preflight_gives_up_on_a_trickling_server_at_its_deadline(
        monkeypatch: pytest.MonkeyPatch, head: bytes, tail: bytes) -> None:
    """A byte every 0.1 s keeps every read under the per-read timeout; the pre-flight still stops at 1.5 s."""
    monkeypatch.setattr(openai, "PREFLIGHT_TIMEOUT_S", 1.5)
    with SlowServer(head, tail, pace_s=0.1) as server:
        started = time.monotonic()
        with pytest.raises(BenchError) as info:
            OpenAIBackend(server.url).preflight("smol", "fine-tuned")
        elapsed = time.monotonic() - started
    assert str(info.value) == (f"{server.url}/v1/models did not answer within 1.5 s: check that the server is "
                               "healthy and that --bench-base-url points at its API")
    assert 1.4 < elapsed < 3.0
    assert server.sent < len(tail)


def test_preflight_reads_no_more_than_its_byte_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai, "PREFLIGHT_MAX_BYTES", 2**20)
    endless = b"[" + b"0," * 32 * 2**20  # 64 MiB of a JSON list that never closes
    with SlowServer(HEADERS, endless, piece=2**16) as server:
        with pytest.raises(BenchError) as info:
            OllamaBackend(server.url).preflight("smol", "fine-tuned")
        time.sleep(0.5)  # the server notices the client has gone
    assert str(info.value) == (f"{server.url}/api/tags answered more than 1 MiB, which is no models list: "
                               "check --bench-base-url and --bench-backend")
    assert server.sent < len(endless) // 4


@pytest.mark.parametrize(
    ("url", "warned"),
    [("http://10.1.2.3:8080/v1", True), ("http://api.example.com/v1", True), ("https://api.example.com/v1", False),
     ("http://127.0.0.1:8080/v1", False), ("http://localhost:11434", False), ("http://[::1]:8000", False),
     (None, False)],
)
def test_a_key_over_plain_http_to_another_machine_is_warned_about(
        monkeypatch: pytest.MonkeyPatch, url: str | None, warned: bool) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    warning = cleartext_key_warning(url)
    assert (warning is not None) == warned
    if warning:
        assert "\n" not in warning and SECRET not in warning and "https://" in warning
    monkeypatch.delenv("OPENAI_API_KEY")
    assert cleartext_key_warning(url) is None  # no key, nothing to leak


def test_the_plain_http_warning_reaches_the_terminal(pytester: pytest.Pytester,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    # No model matches, so the session stops before any request: the warning comes first.
    result = pytester.runpytest_subprocess("--bench-model=nothing-*", "--bench-backend=openai",
                                           "--bench-base-url=http://10.1.2.3:8080/v1", "--bench-base=base")
    lines = result.stderr.lines
    assert lines[0] == ("[bench] WARNING: OPENAI_API_KEY is sent unencrypted to 10.1.2.3 over plain http: "
                        "use an https:// address for a server on another machine")
    assert lines[1].startswith("ERROR: --bench-model nothing-* matches no model folder")
    assert SECRET not in result.stdout.str() + result.stderr.str()


# --------------------------------------------------------------------------- session wiring
def test_auto_backend_picks_hf_for_merged_and_ollama_for_gguf(tmp_path: Path) -> None:
    gguf_only = fake_gguf(tmp_path, "gguf-only")
    options = BenchOptions(model=str(gguf_only), base="llama3.2:1b")
    location = locate_model(options.model, tmp_path)
    base_backend, backend = pick_backends(options, location)
    assert (backend.name, base_backend.name) == ("ollama", "ollama")
    assert finetuned_model(options, location, backend, None, tmp_path).loaded == "gguf-only"
    assert resolve_base_model(options, location, base_backend, tmp_path) == ("llama3.2:1b", "--bench-base")
    merged = tmp_path / "outputs" / "merged" / "merged_16bit"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    options = BenchOptions(model=str(merged.parent), base=str(merged))
    assert pick_backends(options, locate_model(options.model, tmp_path))[1].name == "hf"
    empty = tmp_path / "outputs" / "empty"
    empty.mkdir(parents=True)
    options = BenchOptions(model=str(empty), base=str(merged))
    location = locate_model(options.model, tmp_path)
    with pytest.raises(BenchError, match="No merged model or LoRA adapter found"):
        finetuned_model(options, location, pick_backends(options, location)[1], None, tmp_path)


def test_server_base_needs_a_served_name(tmp_path: Path) -> None:
    outputs = fake_gguf(tmp_path, "ft")
    (outputs / "lora").mkdir()
    (outputs / "lora" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/base"}))
    with pytest.raises(BenchError, match=r"needs the base model's served name \(.*'org/base'.*\): pass --bench-base"):
        make_plan(BenchOptions(model=str(outputs), backend="openai", base_url="http://127.0.0.1:9"), tmp_path, print)


def _backends(tmp_path: Path, **choices: Any) -> tuple[Backend, Backend]:
    options = BenchOptions(model=str(fake_gguf(tmp_path, "ft")), **choices)
    return pick_backends(options, locate_model(options.model, tmp_path))


def test_loglikelihood_tasks_are_skipped_with_reasons_on_a_chat_server(tmp_path: Path, catalog: TaskCatalog) -> None:
    backends = _backends(tmp_path, base="base", backend="ollama")
    tasks, skipped = task_plan(("ifeval", "hellaswag", "mmlu"), catalog, backends)
    assert tasks == ("ifeval",)
    assert sorted(skipped) == ["hellaswag", "mmlu"]
    assert "multiple_choice" in skipped["hellaswag"] and "--bench-backend hf" in skipped["hellaswag"]
    assert "--bench-tasks mmlu_generative" in skipped["mmlu"]
    assert catalog.output_types(["mmlu_generative"])["mmlu_generative"] == {"generate_until"}


def test_only_tasks_no_backend_can_run_is_an_error_not_an_empty_run(tmp_path: Path, catalog: TaskCatalog) -> None:
    backends = _backends(tmp_path, base="base", backend="ollama")
    with pytest.raises(BenchError, match="no task of this run can be benchmarked: hellaswag is scored from"):
        task_plan(("hellaswag",), catalog, backends)


def test_mixed_backends_skip_what_either_side_cannot_score(tmp_path: Path, catalog: TaskCatalog) -> None:
    base_backend, backend = _backends(tmp_path, base="base", backend="ollama", base_backend="hf")
    assert (base_backend.name, backend.name) == ("hf", "ollama")
    assert list(task_plan(("ifeval", "hellaswag"), catalog, (base_backend, backend))[1]) == ["hellaswag"]


def test_chat_template_off_cannot_match_a_chat_server(tmp_path: Path) -> None:
    options = BenchOptions(model="unused", chat_template="off")
    base_backend, backend = _backends(tmp_path, base="base", backend="ollama")
    with pytest.raises(BenchError, match="the ollama server always applies the model's chat template"):
        chat_template(options, [(base_backend, "base", "base"), (backend, "ft", "fine-tuned")], print)


# --------------------------------------------------------------------------- end to end (stub)
@pytest.mark.slow  # starts lm-eval children (a fake model) or a server
def test_ollama_end_to_end_on_stub_skips_hellaswag_and_keeps_the_key_out_of_files(
    pytester: pytest.Pytester, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_gguf(pytester.path, "smol-ft")
    pytester.makepyfile(test_user="""
        import pytest

        @pytest.mark.bench(tasks=["hellaswag"])
        def test_hellaswag_holds(bench_result):
            bench_result.assert_no_regression("hellaswag")
    """)
    output = pytester.path / "bench-out"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with OllamaStub({"smol-ft:latest": "sha256:ft", "smol-base:latest": "sha256:base"}) as stub:
        result = pytester.runpytest_subprocess(
            "--bench-model", "outputs/smol-ft", "--bench-base", "smol-base", "--bench-base-url", stub.url,
            "--bench-tasks", "ifeval,hellaswag", "--bench-limit", "3", "--bench-data-dir", str(demo_data),
            "--bench-output", str(output), "--bench-min-gain", "0", "-rA", "-p", "no:cacheprovider",
            timeout=600,
        )
    out = result.stdout.str()
    result.assert_outcomes(passed=2, skipped=2)  # the hellaswag gate and the user's hellaswag test
    assert out.count("hellaswag is scored from log-likelihoods (multiple_choice)") >= 3, out  # 2 skips + summary
    assert "backends: base smol-base via ollama (local-chat-completions), fine-tuned smol-ft via ollama" in out
    summary = read_json(output / "benchmark.json")
    assert summary["backends"] == {"base": "ollama", "fine-tuned": "ollama"}
    assert list(summary["skipped_tasks"]) == ["hellaswag"]
    assert list(summary["comparison"]) == ["ifeval"]
    assert summary["fine_tuned_model"]["model"] == "smol-ft"
    assert summary["fine_tuned_model"]["chat_template"] == "server"
    assert summary["reproduce"]["apply_chat_template"] is True
    chats = [auth for path, auth in stub.seen if path == "/v1/chat/completions"]
    assert len(chats) == 6 and set(chats) == {f"Bearer {SECRET}"}  # the key really was in use
    assert files_containing(output, SECRET) == []
    assert SECRET not in out


# --------------------------------------------------------------------------- end to end (real llama.cpp)
@pytest.mark.timeout(900)
def test_openai_backend_on_llama_cpp_matches_the_lm_eval_cli(
    pytester: pytest.Pytester, llama_server: LlamaServer, demo_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf_outputs(pytester.path, "smollm2-ft", llama_server.gguf)
    output = pytester.path / "outputs" / "smollm2-ft" / "benchmarks"
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result = pytester.runpytest_subprocess(
        "--bench-model", "outputs/smollm2-ft", "--bench-backend", "openai", "--bench-base-url", llama_server.url,
        "--bench-server-model", llama_server.model, "--bench-base", llama_server.model, "--bench-suite", "test",
        "--bench-data-dir", str(demo_data), "--bench-gen-kwargs", "max_gen_toks=32", "--bench-min-gain", "0",
        "-rA", "-p", "no:cacheprovider",
        timeout=600,
    )
    out = result.stdout.str()
    result.assert_outcomes(passed=2)
    assert "ifeval::improves" in out and "ifeval::no_regression" in out

    summary = read_json(output / "benchmark.json")
    assert summary["status"] == "complete"
    assert summary["backends"] == {"base": "openai", "fine-tuned": "openai"}
    for side in ("base_model", "fine_tuned_model"):
        assert summary[side]["backend"] == "openai"
        assert summary[side]["lm_eval_model"] == "local-chat-completions"
        assert summary[side]["model"] == llama_server.model
        assert summary[side]["chat_template"] == "server"
    assert summary["reproduce"]["apply_chat_template"] is True
    assert summary["reproduce"]["model_args"]["fine-tuned"].startswith(
        f"model={llama_server.model},base_url={llama_server.url}/v1/chat/completions,"
    )
    assert files_containing(output, SECRET) == [] and SECRET not in out

    cli = lm_eval_cli(llama_server, output / "offline-tasks", pytester.path / "cli-out")
    cli_ifeval = cli["results"]["ifeval"]
    for side in ("base_model", "fine_tuned_model"):
        ours = summary[side]["results"]["ifeval"]
        assert {m: ours[m] for m in IFEVAL_METRICS} == {m: cli_ifeval[m] for m in IFEVAL_METRICS}, side
        # The same generated text, not only the same (possibly 0) score.
        cli_samples = next((pytester.path / "cli-out").rglob("samples_ifeval_*.jsonl"))
        assert samples(Path(summary[side]["samples_files"]["ifeval"])) == samples(cli_samples), side


def lm_eval_cli(server: LlamaServer, include_path: Path, out: Path) -> dict[str, Any]:
    """Run the `lm_eval` CLI (langdetect seeded) the way a user would reproduce the plugin's run; its results."""
    command = [
        sys.executable, "-m", "pytest_finetune_bench", "lm-eval", "run", "--model", "local-chat-completions",
        "--model_args", f"model={server.model},base_url={server.url}/v1/chat/completions",
        "--tasks", "ifeval", "--include_path", str(include_path), "--limit", "5", "--apply_chat_template",
        "--gen_kwargs", "max_gen_toks=32", "--log_samples", "--output_path", str(out),
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return read_json(next(out.rglob("results_*.json")))
