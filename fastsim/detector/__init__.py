"""Detector simulation: geometry, material, misalignment and strip hits.

What to use when:

- `load_geometry("tb2022_station")` reads a preset geometry (``fastsim/detector/geometries/*.toml``,
  see `available_geometries()`) or a TOML file of your own; `Geometry.from_dict` builds one from a
  table already in memory.
- `Geometry.layers()` flattens a geometry into z-ordered arrays (targets and sensors) for the numba
  transport and digitization kernels.
- Simulation uses the misaligned geometry (`Geometry.with_misalignment`); reconstruction uses
  `Geometry.nominal()`, the same detector with every misalignment removed.

Coordinates: the beam travels along +z; x is horizontal, y vertical, (x, y, z) right-handed; all
lengths in cm and angles in rad. The conventions of views, tilt and misalignment are spelled out
in `fastsim.detector.geometry`.
"""
