"""`pytest-finetune-bench init`: the guided set-up, from the experiments under outputs/ to bench_* settings.

`discover` finds the experiments, `estimate` says how long each suite takes here, `config_file` writes
the keys into the project's pytest configuration, `workflow` writes the CI job and `wizard` asks.
"""
