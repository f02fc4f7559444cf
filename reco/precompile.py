"""Compile the reconstruction on the second core while this process compiles the generation and
the transport.

numba compiles on one core. From a cold cache, the first full-mode chunk of a chain compiles the
generation and the transport and then the reconstruction, identification and selection, one
after the other. `start(config)` launches `python -m reco.precompile`, which runs the chain on
zero events without the transport (`Chain.chunk(0, 0, transport=False)`: the kernels downstream
of the transport run on empty chunks, the generation's and the transport's are not called) and
so compiles the kernels downstream of the transport into numba's on-disk cache (112 s on the
development machine, alone). `reconstruct` calls `wait()` before its kernel: this process then loads
them from the cache instead of compiling them. A cold `muone study quickstart` there (2 cores)
reached the reconstruction after 72-91 s, waited 20 s and took 111-131 s in all, against
172-213 s without the background process; the results are the same. The `muone` commands that
run a full-mode chain in their own process (study, simulate, calibrate) call `start`; a script
can do the same.

`start` does nothing (returns False) in parametric mode, when numba's on-disk cache already
holds the reconstruction kernel, when the JIT is disabled, when this process may use only one
core, or when the environment sets MUONE_PRECOMPILE=0. The background process only fills the
cache: if it fails or is killed, this process compiles what it needs itself, and `wait` warns
with the end of the background process's error output.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import warnings

_pending: tuple[subprocess.Popen, object] | None = None  # the background process and its stderr file
_lock = threading.Lock()  # reconstruct may run in several threads


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def reconstruction_is_cached() -> bool:
    """True if numba's on-disk cache holds a compiled reconstruction kernel for these sources."""
    from reco.reconstruct import _reconstruct_kernel

    cache = getattr(_reconstruct_kernel, "_cache", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    return index is not None and os.path.exists(index)


def start(config) -> bool:
    """Start compiling the kernels of `config` (a reco.chain.ChainConfig) downstream of the
    transport in a background process; True if one was started (see the module docstring)."""
    global _pending
    import numba

    with _lock:
        if (_pending is not None or config.mode != "full" or os.environ.get("MUONE_PRECOMPILE", "1") == "0"
                or numba.config.DISABLE_JIT or _usable_cores() < 2 or reconstruction_is_cached()):
            return False
        environment = dict(os.environ)
        if numba.config.CACHE_DIR:  # this process's cache, wherever it was set
            environment["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
        errors = tempfile.TemporaryFile()
        process = subprocess.Popen([sys.executable, "-m", "reco.precompile"], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=errors, env=environment)
        try:
            process.stdin.write(pickle.dumps(config))
            process.stdin.close()
        except OSError:  # the process died at start-up: wait() reports its error output
            pass
        _pending = (process, errors)
        return True


def wait() -> None:
    """Wait for the background compilation started by `start`, if any (returns at once otherwise)."""
    global _pending
    if _pending is None:
        return
    with _lock:
        if _pending is None:  # another thread waited for it
            return
        process, errors = _pending
        status = process.wait()
        _pending = None
    if status != 0:
        errors.seek(0)
        tail = errors.read().decode(errors="replace").strip().splitlines()[-5:]
        warnings.warn(f"reco.precompile: the background compilation exited with code {status}; this process "
                      "compiles the reconstruction itself. Its last output:\n" + "\n".join(tail),
                      RuntimeWarning, stacklevel=2)
    errors.close()


@atexit.register
def _stop():
    """At exit: stop a background compilation nobody waited for."""
    if _pending is not None and _pending[0].poll() is None:
        _pending[0].kill()


def compile_chain(config) -> None:
    """Run `config`'s chain on zero events, without the transport: compiles (and caches) the
    kernels of the digitization, stubs, calorimeter response, reconstruction, identification and
    selection, which run on empty chunks too, but not the generation's or the transport's."""
    from reco.chain import Chain

    Chain(config, seed=0).chunk(0, 0, transport=False)


if __name__ == "__main__":
    compile_chain(pickle.load(sys.stdin.buffer))
