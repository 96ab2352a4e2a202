"""``malloc_policy``: with it, glibc serves a day-sized block from its heap instead of mapping it
apart, from the main thread and from a thread started later, and keeps it once freed.

Each case runs in a fresh interpreter: the policy holds for the rest of the process it is set in.
"""

import json
import subprocess
import sys
import textwrap

import pytest

from greenstream_dagster import malloc_policy

pytestmark = pytest.mark.skipif(malloc_policy._glibc() is None, reason="glibc only")

BLOCK = 64 << 20  # above the largest mmap threshold glibc allows (32 MB)

PROBE = textwrap.dedent(
    f"""
    import ctypes, json, sys, threading
    from greenstream_dagster import malloc_policy

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    applied = malloc_policy.keep_freed_memory() if sys.argv[1] == "policy" else None
    libc = malloc_policy._glibc()
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = Mallinfo2

    def probe():
        before = libc.mallinfo2().hblkhd
        block = libc.malloc({BLOCK})
        ctypes.memset(block, 1, {BLOCK})
        mapped = libc.mallinfo2().hblkhd - before
        libc.free(block)
        return mapped, libc.mallinfo2().hblkhd - before

    main = probe()
    found = []
    worker = threading.Thread(target=lambda: found.append(probe()))
    worker.start()
    worker.join()
    print(json.dumps({{"applied": applied, "main": main, "thread": found[0],
                      "kept_free": libc.mallinfo2().fordblks}}))
    """
)


def _probe(mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_without_the_policy_a_large_block_is_mapped_apart_and_unmapped_when_freed():
    found = _probe("default")
    for mapped, left in (found["main"], found["thread"]):
        assert mapped >= BLOCK
        assert left == 0


def test_with_the_policy_a_large_block_comes_from_the_heap_and_stays_there_once_freed():
    found = _probe("policy")
    assert found["applied"] is True
    # Nothing mapped apart, on the main thread or on a thread started afterwards.
    assert found["main"] == [0, 0]
    assert found["thread"] == [0, 0]
    # The freed block is still the heap's, ready for the next one.
    assert found["kept_free"] >= BLOCK


def test_the_policy_is_set_once_per_process():
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from greenstream_dagster import malloc_policy as m; "
            "print(m.keep_freed_memory(), m.keep_freed_memory(), "
            "m.keep_freed_memory.cache_info().misses)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.split() == ["True", "True", "1"]
