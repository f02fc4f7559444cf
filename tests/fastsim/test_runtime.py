"""Tests of fastsim.runtime: the malloc settings are accepted where the C library is glibc."""

import platform

import pytest

from fastsim.runtime import retain_freed_memory


def test_retain_freed_memory_reports_what_it_did():
    accepted = retain_freed_memory()
    assert isinstance(accepted, bool)
    libc, _ = platform.libc_ver()
    if libc == "glibc":
        assert accepted
    assert retain_freed_memory() == accepted  # idempotent


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_chunks_are_reused_without_growing_the_heap():
    import numpy as np

    retain_freed_memory()
    first = np.empty(4_000_000)  # 32 MB: below the fixed mmap threshold, served from the heap
    address = first.ctypes.data
    del first
    second = np.empty(4_000_000)
    assert second.ctypes.data == address
