"""The same CPU math kernels on every x86-64 machine, so a clone reproduces git's outputs byte for byte.

numpy's and scipy's OpenBLAS (built DYNAMIC_ARCH), torch's MKL, oneDNN and ATen kernels and numpy's own SIMD
loops each pick their code by the CPU they find: on a CPU with AVX-512 they pick other kernels, which sum in
another order, and a SARIMA fit moved in its 4th digit (issue 35: OpenBLAS's SkylakeX kernels; Haswell's gave
git's bytes on that machine). `pin()` asks each library for its AVX2 code, the set every x86-64 CPU since 2013
has and the one the committed outputs were made with. It runs when the `stages` package is imported, before
any stage imports numpy or torch (each library reads its variable once, when it loads), so `python -m stages.X`,
`dvc repro`, `dvc exp run` and the queue's workers all get it.

It sets a variable only where the environment leaves it unset (some CPUs need their own OpenBLAS core type for
correct results) and only on a Linux x86-64 CPU that has AVX2 and FMA. Elsewhere (macOS, arm64) nothing is
pinned and the outputs agree within the tolerance of docs/reproducibility.md, not byte for byte.
"""
import os
import platform
from pathlib import Path

# variable: value. Sources: OpenBLAS USAGE.md (OPENBLAS_CORETYPE, DYNAMIC_ARCH builds); oneMKL developer guide,
# "Obtaining Numerically Reproducible Results" (MKL_CBWR); oneDNN "CPU Dispatcher Control" (ONEDNN_MAX_CPU_ISA);
# PyTorch's ATEN_CPU_CAPABILITY (aten/src/ATen/native/DispatchStub.cpp).
AVX2 = {
    "OPENBLAS_CORETYPE": "Haswell",
    "MKL_CBWR": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
}
# numpy's own loops (np.log, np.exp, reductions) have AVX-512 versions; numpy 2.4 names those feature groups so.
NUMPY_AVX512 = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The first CPU's feature flags on Linux; empty where there is no /proc/cpuinfo."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def pins(flags: set[str], machine: str, environ) -> dict[str, str]:
    """The variables to set: the AVX2 set where the CPU has AVX2 and FMA, numpy's AVX-512 loops off where the CPU
    has them, minus every variable the environment already sets."""
    if machine not in ("x86_64", "AMD64") or not {"avx2", "fma"} <= flags:
        return {}
    wanted = AVX2 | (NUMPY_AVX512 if "avx512f" in flags else {})
    return {k: v for k, v in wanted.items() if k not in environ}


def pin() -> None:
    os.environ.update(pins(cpu_flags(), platform.machine(), os.environ))
