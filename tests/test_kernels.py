"""The CPU kernel pins (stages/core/kernels.py): set before numpy loads, only where unset and where the CPU has AVX2."""
import os
import subprocess
import sys
from pathlib import Path

from stages.core import kernels

AVX2 = {"avx", "avx2", "fma", "sse4_2"}


def test_an_avx2_cpu_gets_the_avx2_kernels_and_an_avx512_cpu_also_numpys_avx2_loops():
    assert kernels.pins(AVX2, "x86_64", {}) == kernels.AVX2
    assert kernels.pins(AVX2 | {"avx512f"}, "x86_64", {}) == kernels.AVX2 | kernels.NUMPY_AVX512


def test_a_value_the_environment_sets_is_never_overridden():
    pins = kernels.pins(AVX2, "x86_64", {"OPENBLAS_CORETYPE": "Zen"})
    assert "OPENBLAS_CORETYPE" not in pins and pins["MKL_CBWR"] == "AVX2"


def test_nothing_is_pinned_without_avx2_or_off_x86():
    assert kernels.pins({"avx", "sse4_2"}, "x86_64", {}) == {}
    assert kernels.pins(AVX2, "arm64", {}) == {}
    assert kernels.pins(AVX2, "aarch64", {}) == {}


def test_cpu_flags_read_linux_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert kernels.cpu_flags(info) == {"fpu", "sse2", "avx2", "fma"}
    assert kernels.cpu_flags(tmp_path / "missing") == set()


def test_a_stage_process_loads_numpys_openblas_with_the_pinned_core():
    """What `dvc repro` runs, `python -m stages.<name>`, imports the package first: the pin is in place before
    numpy's OpenBLAS reads it (numpy reports the core it picked)."""
    def cores(**env) -> list[str]:
        code = ("import stages, numpy, scipy.linalg, os; from threadpoolctl import threadpool_info; "
                "print(os.environ.get('OPENBLAS_CORETYPE'), *[i['architecture'] for i in threadpool_info() "
                "if i['internal_api'] == 'openblas'])")
        clean = {k: v for k, v in os.environ.items() if k not in kernels.AVX2}
        return subprocess.run([sys.executable, "-c", code], env=clean | env, cwd=Path(__file__).parents[1],
                              text=True, capture_output=True, check=True).stdout.split()

    if not kernels.pins(kernels.cpu_flags(), "x86_64", {}):
        assert cores()[0] == "None"  # no AVX2 here: nothing pinned
        return
    assert cores() == ["Haswell"] * 3  # numpy's and scipy's OpenBLAS both
    assert cores(OPENBLAS_CORETYPE="Sandybridge") == ["Sandybridge"] * 3  # the machine's own choice wins
