"""Options, ini twins, markers and their error messages, through pytester (no model runs here)."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_finetune_bench.demo import demo_data_dir
from pytest_finetune_bench.plan.choices import BenchOptions
from pytest_finetune_bench.plan.option_table import DERIVED_FIELDS, OPTIONS, PLUGIN_SETTINGS
from pytest_finetune_bench.plan.parallel import ENGINE_FLAGS
from pytest_finetune_bench.plugin.options import OutputChoices
from tests.fake_sessions import make_fake_model

FIELDS = {f.name: f for f in dataclasses.fields(BenchOptions)}


def _field_default(name: str) -> object:
    field = FIELDS[name]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def test_every_option_fills_a_field_with_its_default_and_every_field_is_filled() -> None:
    """One table: each row reaches a BenchOptions field (or a setting of the plugin's own) and agrees on the
    default; every BenchOptions field is filled by a row or derived from them."""
    filled: list[str] = []
    for opt in OPTIONS:
        default = opt.typed_default()
        if opt.field in PLUGIN_SETTINGS:
            assert opt.field not in FIELDS, opt.flag
            continue
        assert opt.field in FIELDS, f"{opt.flag} fills {opt.field}, which BenchOptions lacks"
        if opt.per_task is None:
            assert default == _field_default(opt.field), opt.flag
            filled.append(opt.field)
        else:
            assert default == (_field_default(opt.field), _field_default(opt.per_task)), opt.flag
            filled += [opt.field, opt.per_task]
    assert len(filled) == len(set(filled)), "two options fill one field"
    assert set(filled) | set(DERIVED_FIELDS) == set(FIELDS)
    assert not set(filled) & set(DERIVED_FIELDS)
    assert {f.name for f in dataclasses.fields(OutputChoices)} <= PLUGIN_SETTINGS
    assert len({opt.flag for opt in OPTIONS}) == len({opt.ini for opt in OPTIONS}) == len(OPTIONS)


def test_engine_flags_come_from_the_table() -> None:
    assert ENGINE_FLAGS == {"--bench-tensor-parallel": ("tensor_parallel", 1, "vllm"),
                            "--bench-data-parallel": ("data_parallel", 1, "vllm"),
                            "--bench-gpu-memory-utilization": ("gpu_memory_utilization", None, "vllm"),
                            "--bench-max-model-len": ("max_model_len", None, "vllm"),
                            "--bench-parallelize": ("parallelize", False, "hf")}


def test_read_options_gives_the_table_defaults(pytester: pytest.Pytester) -> None:
    """Through pytest: a session given only --bench-model reads every other option at its table default."""
    pytester.makepyfile(
        """
        import dataclasses
        from pytest_finetune_bench.plan.choices import BenchOptions
        from pytest_finetune_bench.plugin.options import read_options

        def test_defaults(pytestconfig):
            read = read_options(pytestconfig)
            expected = BenchOptions(model="model", models=("model",), base="model")
            differing = [f.name for f in dataclasses.fields(BenchOptions)
                         if getattr(read, f.name) != getattr(expected, f.name)]
            assert differing == ["cache_dir"]  # the test suite's environment variable sets it
        """
    )
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    result = pytester.runpytest("--bench-model", "model", "--bench-base", "model", "-k", "test_defaults",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_help_lists_every_option_with_its_ini_twin(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "benchmark a fine-tuned model against its base" in text
    for opt in OPTIONS:
        assert opt.flag in text
        assert opt.ini in text


def test_markers_output_documents_bench_marker(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.bench(suite=None, tasks=None):*"])


def test_plugin_changes_nothing_without_bench_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "fine-tune benchmark" not in result.stdout.str()
    assert not (pytester.path / "benchmarks").exists()


def test_benchmark_tests_are_skipped_without_bench_model(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bench(suite="quick")
        def test_uses_result(bench_result):
            assert bench_result

        def test_fixture_without_marker(base_score):
            assert base_score
        """
    )
    result = pytester.runpytest("-rs", "--strict-markers")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*needs --bench-model*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bench-suite", "huge"], "--bench-suite: 'huge' is not a suite: choose one of test, quick, core, full"),
        (["--bench-limit", "lots"], "--bench-limit: 'lots' is not a sample limit*"),
        (["--bench-batch-size", "0"], "--bench-batch-size: '0' is not a batch size*"),
        (["--bench-device", "tpu"], "--bench-device: 'tpu' is not a device*"),
        (["--bench-min-gain", "ifeval=much"], "--bench-min-gain: 'much' is not a number of points*"),
        (["--bench-gen-kwargs", "max_gen_toks"], "--bench-gen-kwargs: 'max_gen_toks' is not gen kwargs*"),
        (["--bench-metric", "wikitext"], "--bench-metric: 'wikitext' is not TASK=METRIC*"),
    ],
)
def test_bad_cli_values_name_their_flag(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    result = pytester.runpytest("--bench-model", "model", "--bench-base", "model", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


def test_bad_ini_value_names_the_ini_key(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makeini("[pytest]\nbench_model = model\nbench_base = model\nbench_dtype = float8\n")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: ini option bench_dtype: 'float8' is not a dtype*"])


def test_cli_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makeini("[pytest]\nbench_model = model\nbench_base = model\nbench_dtype = float8\n")
    result = pytester.runpytest("--bench-dtype", "float32", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["finetune-bench::ifeval::improves", "finetune-bench::ifeval::no_regression"])


def test_metric_choices_come_one_per_flag_or_ini_line(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makeini("[pytest]\nbench_metric =\n    gsm8k=exact_match,flexible-extract\n    wikitext=bits_per_byte\n")
    pytester.makepyfile(
        """
        from pytest_finetune_bench.plugin.options import read_options

        def test_choices(pytestconfig):
            print("CHOICES", sorted(read_options(pytestconfig).metrics.items()))
        """
    )
    args = ("--bench-model", "model", "--bench-base", "model", "-k", "test_choices", "-s", "-p", "no:cacheprovider")
    from_ini = pytester.runpytest(*args).stdout.str()
    assert "CHOICES [('gsm8k', ('exact_match', 'flexible-extract')), ('wikitext', ('bits_per_byte', None))]" in from_ini
    from_flag = pytester.runpytest(*args, "--bench-metric", "gsm8k=exact_match,strict-match").stdout.str()
    assert "CHOICES [('gsm8k', ('exact_match', 'strict-match'))]" in from_flag


def test_unknown_marker_argument_is_rejected(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bench(suite="core", task="ifeval")
        def test_typo():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: *test_typo: @pytest.mark.bench takes only keyword arguments suite, tasks; got task"]
    )


def test_gate_items_follow_suite_and_targets(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    result = pytester.runpytest(
        "--bench-model", "model", "--bench-base", "model", "--bench-suite", "core", "--collect-only", "-q",
        "--bench-target-tasks", "ifeval,gsm8k",
    )
    result.stdout.fnmatch_lines(
        [
            "finetune-bench::ifeval::improves",
            "finetune-bench::ifeval::no_regression",
            "finetune-bench::gsm8k::improves",
            "finetune-bench::gsm8k::no_regression",
            "finetune-bench::hellaswag::no_regression",
            "*5 tests collected*",
        ]
    )


def test_suite_selects_marked_user_tests(pytester: pytest.Pytester) -> None:
    pytester.mkdir("model")
    (pytester.path / "model" / "config.json").write_text("{}")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.bench(suite="core")
        def test_needs_core():
            pass

        @pytest.mark.bench(tasks=["ifeval"])
        def test_needs_ifeval():
            pass
        """
    )
    result = pytester.runpytest(
        "--bench-model", "model", "--bench-base", "model", "--bench-suite", "quick", "-rs",
        "-k", "needs", "-p", "no:cacheprovider",
    )
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*benchmark test needs gsm8k, hellaswag, which this run (--bench-suite quick)*"])


def test_bench_plan_prints_the_resolved_plan_and_runs_nothing(pytester: pytest.Pytester) -> None:
    model = make_fake_model(pytester.path)
    out = pytester.path / "out"
    result = pytester.runpytest(
        f"--bench-model={model}", f"--bench-data-dir={demo_data_dir()}", f"--bench-output={out}",
        "--bench-device=cpu", "--bench-limit=7", "--bench-gen-kwargs=max_gen_toks=16", "--bench-plan",
        "--bench-max-drop=ifeval=3", "-p", "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        f"model under test: {model} (merged_16bit)",
        f"base: {model.parent / 'model-base'} via hf (hf); named by lora/adapter_config.json:base_model_name_or_path",
        f"  model args: pretrained={model.parent / 'model-base'},dtype=float32",
        "  content: *",
        "fine-tuned: * via hf (hf); named by --bench-model",
        "tasks: ifeval",
        "  limit: 7",
        "  device: cpu",
        "  gen_kwargs: max_gen_toks=16",
        "gates ifeval: improves by +2 (point), no_regression beyond -3 (point)",
    ])
    keys = [line.split("cache key: ")[1] for line in result.stdout.lines if "cache key: " in line]
    assert len(keys) == 2 and keys[0] != keys[1]  # the two models' contents differ
    assert "[bench]" not in result.stdout.str()  # nothing ran
    assert not (out / "base").exists() and not (out / "fine-tuned").exists()
