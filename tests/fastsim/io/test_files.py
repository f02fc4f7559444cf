"""Atomic output files: a temporary beside the target, with a new file's permissions."""

import os
import stat

from fastsim.events import TruthWriter
from fastsim.generator.generate import Generator, GeneratorConfig
from fastsim.io.files import temporary_beside


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_outputs_get_the_permissions_of_a_new_file(tmp_path):
    """Not tempfile.mkstemp's owner-only 0600: a Parquet file written by TruthWriter is readable as
    any file the user creates (0666 minus the umask)."""
    expected = 0o666 & ~_umask()
    temporary = temporary_beside(tmp_path / "out.json")
    assert temporary.parent == tmp_path and temporary.name.startswith(".out.json.")
    assert stat.S_IMODE(temporary.stat().st_mode) == expected
    path = tmp_path / "events.parquet"
    writer = TruthWriter(path, {})
    writer.write(Generator(GeneratorConfig(), seed=1).chunk(0, 10))
    writer.close()
    assert stat.S_IMODE(path.stat().st_mode) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == [temporary.name, "events.parquet"]
