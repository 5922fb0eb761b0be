"""glibc malloc settings for training loops: reuse freed memory instead of handing it back.

A CPU training step allocates the same large tensors every step (activations, gradients,
packed sequence buffers: ~0.1-10 MB each). With glibc's defaults a freed block that large is
returned to the OS (unmapped, or trimmed off the top of the heap) and the next step's
allocation of the same size page-faults its memory back in, zeroed, one 4 KiB page at a
time. Measured on ml-100k (2 cores, batch 256): DIEN ~1,750 and DIN ~70-250 minor page
faults a step by default, ~0-16 with the settings below, and a step 7-15% faster
(docs/models.md, "Allocator"). PyTorch's CPU tuning guide suggests jemalloc or tcmalloc for
the same reason; these two ``mallopt`` calls get the effect without preloading another
allocator.

The settings are process-wide and cannot be undone (setting a threshold turns glibc's
adaptive threshold off), so ``fit`` does not touch them: the processes that are there to train
opt in (the training job, ``train/job.py``), and the quality benchmark applies them once,
before either library trains, so that ours and the peer run under the same allocator.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's upper limit on 64-bit: larger blocks are still mapped
TRIM_THRESHOLD = 256 << 20  # free memory kept at the heap's top before it is returned


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Keep freed blocks up to 32 MiB in the heap and up to 256 MiB of free heap top, so
    the next step reuses their pages. Once a process; False where libc is not glibc (the
    call then changes nothing)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
