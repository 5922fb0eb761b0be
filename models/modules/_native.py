"""The optional C++ kernels (``csrc/``), compiled on first use: the GRU recurrence
(``recurrence.cpp``), DIN's attention pooling in training (``din_attention.cpp``), the
bank's [item, category] gather in training (``gather.cpp``) and the top MLPs' Dice and
dropout in training (``dice_dropout.cpp``).

``native()`` returns the compiled module, or None where it cannot be had: no C++ compiler or
ninja, a failed build, or ``use_native(False)`` (tests compare both paths). It is built once
per machine by torch's JIT extension loader into ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``; ~60 s on 2 cores, then loaded in well under a second) and
rebuilt when the source changes; the build is keyed by the CPU (it uses ``-march=native``)
and by the checkout.
The Python loops in ``models.modules.recurrence`` and the ATen path of
``models.modules.attention`` are the same algebra and agree with it to float rounding; only
CPU tensors use it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)
_CSRC = Path(__file__).resolve().parent / "csrc"
_SOURCES = [_CSRC / "recurrence.cpp", _CSRC / "din_attention.cpp", _CSRC / "gather.cpp",
            _CSRC / "dice_dropout.cpp", _CSRC / "bindings.cpp"]
# Vectorised exp/tanh (glibc's libmvec) need -ffast-math, -fopenmp-simd and a target with
# wide vectors: without -march=native the forward loop runs ~5x slower than with it.
# -fopenmp: at::parallel_for is a header template over OpenMP; without the flag it compiles
# to a serial loop. The extension then needs libgomp.so.1, which torch has already loaded
# (its bundled copy has that soname), so both share one OpenMP runtime and thread pool.
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp"]
_state: dict[str, ModuleType | bool | None] = {"enabled": True}
_lock = threading.Lock()


def use_native(enabled: bool) -> None:
    """Allow (default) or forbid the C++ loops in this process."""
    _state["enabled"] = enabled


def _ninja_on_path() -> bool:
    """torch's loader calls ``ninja``; the PyPI package puts it beside the interpreter,
    which is not on PATH when the venv is not activated."""
    if shutil.which("ninja"):
        return True
    candidate = Path(sys.executable).parent / "ninja"
    if candidate.exists():
        os.environ["PATH"] = f"{candidate.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        return True
    return False


def native() -> ModuleType | None:
    """The compiled loops, or None (see module docstring); built at most once a process."""
    if not _state["enabled"]:
        return None
    if "module" not in _state:
        with _lock:  # one build even when serving threads ask at once
            if "module" not in _state:
                _state["module"] = _build()
    module = _state["module"]
    return module if isinstance(module, ModuleType) else None


def _build_key() -> str:
    """A short hash of this CPU's model and instruction set and of the source's path: the
    build uses -march=native, so a cache shared between different CPUs must not hand one CPU
    another's binary, and two checkouts on one machine must not rebuild over each other."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        info = [platform.machine(), platform.processor()]
    wanted = [line for line in info if line.startswith(("model name", "flags"))][:2]
    key = "\n".join([*(wanted or info[:1]), str(_CSRC)])
    return hashlib.sha1(key.encode()).hexdigest()[:10]


def _build() -> ModuleType | None:
    if not _ninja_on_path() or not shutil.which("c++"):
        return None
    try:
        from torch.utils.cpp_extension import load

        module: ModuleType = load(f"recstream_kernels_{_build_key()}", [str(p) for p in _SOURCES],
                                  extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                                  verbose=False)
        return module
    except Exception as exc:  # any build problem: the Python loops do the same work
        log.warning("C++ kernels unavailable (%s); using the Python / ATen paths", exc)
        return None


if __name__ == "__main__":  # `python -m models.modules._native`: build now (make install does)
    logging.basicConfig(level=logging.INFO)
    built = native()
    print("C++ kernels (GRU recurrence, DIN attention, bank gather, Dice, dropout):",
          "built" if built is not None else "unavailable; the Python / ATen paths will be used")
