"""`python -m lazykeops`: the self-check's run-and-compare step passes on the CPU (the
GPU step runs where CUDA and nvcc are, tests/gpu covers its engine)."""

from lazykeops.__main__ import check


def test_self_check_passes_on_the_cpu(capsys):
    assert check("cpu", 5_000)
    out = capsys.readouterr().out
    assert "CPU engine" in out and "OK" in out
