"""The benchmarks run against the library as it is: they import, and the explanation basis rows
run end to end on a small model (ratios printed, nothing timed is asserted)."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["bench_explain", "bench_evaluation"])
def test_each_benchmark_imports(name):
    assert callable(load(name).main)


@pytest.mark.slow
def test_the_explain_benchmark_runs_on_a_small_model(capsys):
    load("bench_explain").main(["--model", "ViT-S-32", "--methods", "grad_eclip", "--repeats", "1",
                                "--threads", "1", "--vocabulary", "5000", "--memory-batch", "1"])
    out = capsys.readouterr().out
    assert "basis (grad_eclip)" in out and "K=5,000" in out and "each 1,000 more" in out
