"""reco.precompile: the background compilation covers the chain's kernels, and fails safe."""

import ast
import subprocess
import sys
import textwrap
import types

import pytest

from reco import precompile
from reco.chain import ChainConfig

# In a fresh process: the numba dispatchers (by defining module) that gained a signature when the
# real chain ran after compile_chain, i.e. what the background compilation left to compile.
_LEFT_TO_COMPILE = textwrap.dedent("""
    import sys
    from numba.core.registry import CPUDispatcher
    from reco.chain import Chain, ChainConfig
    from reco.precompile import compile_chain

    def signatures():
        return {f"{value.py_func.__module__}.{value.py_func.__qualname__}": set(value.signatures)
                for name, module in list(sys.modules.items()) if name.split(".")[0] in ("fastsim", "reco")
                for value in vars(module).values() if isinstance(value, CPUDispatcher)}

    config = ChainConfig.from_dict({"geometry": "tr2023"})
    compile_chain(config)
    before = signatures()
    Chain(config, seed=3).chunk(0, 500)
    after = signatures()
    print(sorted(name for name in before if before[name]))
    print(sorted(name for name in after if after[name] - before.get(name, set())))
""")

# what the background compilation leaves to this process: the generation and the transport
_UPSTREAM = ("fastsim.generator.", "fastsim.physics.", "fastsim.rng.", "fastsim.numerics.",
             "fastsim.detector.transport.", "fastsim.detector.interactions.")


def test_background_compilation_leaves_only_generation_and_transport():
    result = subprocess.run([sys.executable, "-c", _LEFT_TO_COMPILE], capture_output=True, text=True, check=True)
    compiled, left = (ast.literal_eval(line) for line in result.stdout.strip().split("\n")[-2:])
    assert {"reco.reconstruct._reconstruct_kernel", "reco.pid._identify_chunk",
            "fastsim.detector.digitization._digitize_pass", "fastsim.detector.stubs._match_seeds"} <= set(compiled)
    assert "fastsim.detector.transport._transport" in left and "fastsim.generator.generate._elastic_chunk" in left
    assert [name for name in left if not name.startswith(_UPSTREAM)] == []


def test_start_and_wait(monkeypatch):
    precompile.wait()  # the test session's own background compilation, if any
    monkeypatch.setattr(precompile, "reconstruction_is_cached", lambda: False)
    monkeypatch.setattr(precompile, "_usable_cores", lambda: 2)
    assert not precompile.start(types.SimpleNamespace(mode="parametric"))
    monkeypatch.setenv("MUONE_PRECOMPILE", "0")
    assert not precompile.start(ChainConfig.from_dict({"geometry": "tr2023"}))
    monkeypatch.delenv("MUONE_PRECOMPILE")
    with monkeypatch.context() as one_core:
        one_core.setattr(precompile, "_usable_cores", lambda: 1)
        assert not precompile.start(ChainConfig.from_dict({"geometry": "tr2023"}))
    assert precompile.start(ChainConfig.from_dict({"geometry": "tr2023"}))
    assert not precompile.start(ChainConfig.from_dict({"geometry": "tr2023"}))  # one at a time
    precompile.wait()  # the kernels are in the cache already: a quick, clean exit
    precompile.wait()  # nothing pending: returns at once


def test_a_failed_background_compilation_warns_and_loses_nothing(monkeypatch):
    precompile.wait()
    monkeypatch.setattr(precompile, "reconstruction_is_cached", lambda: False)
    monkeypatch.setattr(precompile, "_usable_cores", lambda: 2)
    assert precompile.start(types.SimpleNamespace(mode="full"))  # not a ChainConfig: the process fails
    with pytest.warns(RuntimeWarning, match="(?s)exited with code 1.*must be a ChainConfig"):
        precompile.wait()
