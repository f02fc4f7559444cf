"""fastsim: physics, event generation and detector simulation for MUonE.

The bottom layer of the toolkit. `fastsim.physics` holds the leading-order mu e -> mu e cross
section, the running of alpha (leptonic and hadronic vacuum polarization) and the a_mu^HLO master
integral; `fastsim.generator` produces weighted or unweighted truth events; `fastsim.detector`
transports them through targets and 2S strip modules. Nothing here imports reco, systematics or
studies.

Numba's on-disk cache checks only the source file of the function it compiled, not the files of
the kernels inlined into it; a kernel compiled against an older version of another module would
be reused silently. Unless NUMBA_CACHE_DIR is set, the toolkit's kernels are therefore cached in
a directory named by a hash of all its sources (under $XDG_CACHE_HOME or ~/.cache), so any change
of the code starts a fresh cache.
"""

import hashlib
import os
from pathlib import Path

__version__ = "0.5.0"


def _source_hash() -> str:
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256(__version__.encode())
    for package in ("fastsim", "reco", "systematics"):  # the packages with numba kernels
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _set_numba_cache_dir():
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    import numba

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = base / "muone-toolkit" / "numba" / _source_hash()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:  # no writable cache directory: numba's default (next to the sources)
        return
    numba.config.CACHE_DIR = str(directory)


_set_numba_cache_dir()
