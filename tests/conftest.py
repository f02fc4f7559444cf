"""Test-session set-up shared by all packages."""

from pathlib import Path

_TESTS = Path(__file__).parent
_WITHOUT_RECONSTRUCTION = {"fastsim", "physics"}  # test folders that never reconstruct


def pytest_collection_finish(session):
    """From a cold numba cache, compile the reconstruction on the second core while the first
    tests run (reco.precompile), if the session reconstructs at all."""
    folders = {item.path.relative_to(_TESTS).parts[0] for item in session.items if item.path.is_relative_to(_TESTS)}
    if folders - _WITHOUT_RECONSTRUCTION:
        from reco import precompile
        from reco.chain import ChainConfig

        precompile.start(ChainConfig.from_dict({"geometry": "tr2023"}))
