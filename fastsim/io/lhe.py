"""Read Les Houches Event files (any generator) into `ExternalEvents`, with pylhe.

The file must describe muon-electron scattering in the laboratory frame: two incoming particles
(status -1), one of them an electron (pdg 11) at rest, which is the target and is not stored; the
other is the beam. Outgoing particles are those with status 1; intermediate ones are dropped.
Energies are taken from the file. Needs ``pip install muone-toolkit[lhe]`` (pylhe); plain and
gzip-compressed files are read.

Weight normalization
--------------------
LHE weights XWGTUP and cross sections XSECUP are in pb (Les Houches accord, Boos et al.,
hep-ph/0109068; Alwall et al., hep-ph/0609017) and are converted to ub. The meaning of XWGTUP
depends on the strategy IDWTUP of the ``<init>`` block:

- |IDWTUP| = 1 or 4: weighted events, the cross section is the mean of XWGTUP, so
  ``weight_ub = XWGTUP * 1e-6``;
- |IDWTUP| = 2 or 3: the cross section is the sum of the processes' XSECUP and XWGTUP only
  carries relative weights (often +-1), so all weights are scaled by one factor such that
  ``weight_ub.sum() / n = sum(XSECUP) * 1e-6``.

In both cases ``weight_ub.sum() / n_events`` estimates the cross section in ub.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from fastsim.io.external import ExternalEvents
from fastsim.units import PB_TO_UB, PDG_ELECTRON

# The target electron counts as at rest when its 3-momentum is below this (GeV).
_TARGET_AT_REST_TOL_GEV = 1e-6
_STATUS_INCOMING = -1
_STATUS_OUTGOING = 1


def _malformed(path: Path, what: str) -> ValueError:
    return ValueError(f"{path}: malformed LHE file: {what}")


def read_lhe(path) -> ExternalEvents:
    """Read an LHE file (plain or gzip) of mu e -> mu e (gamma ...) events in the laboratory frame.

    Parameters
    ----------
    path : str or path-like
        The LHE file.

    Returns
    -------
    ExternalEvents
        Event ids are 1, 2, ... in file order; ``weight_ub`` normalized as explained in the module
        docstring; ``extra`` holds ``xwgtup`` (the raw weight, pb) and ``process_id`` (IDPRUP).

    Raises
    ------
    ImportError
        If pylhe is not installed.
    ValueError
        Missing or malformed file, unsupported weighting strategy, an event without exactly two
        incoming particles or without an electron target at rest: the message names the file.
    """
    try:
        import pylhe
    except ImportError:
        raise ImportError("reading LHE files needs pylhe: pip install muone-toolkit[lhe]") from None
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: LHE file not found")

    xwgtup, process_id, n_out = [], [], []
    beam, particles = [], []
    n_read = 0
    with warnings.catch_warnings(record=True) as caught:
        # pylhe reports XML errors (also a truncated file) as a RuntimeWarning and stops early.
        warnings.simplefilter("always")
        try:
            lhef = pylhe.LHEFile.fromfile(path, with_attributes=False, generator=True)
            init = lhef.init
            for event in lhef.events:
                n_read += 1
                _append_event(path, n_read, event, xwgtup, process_id, n_out, beam, particles)
        except ValueError as exc:
            if str(exc).startswith(str(path)):
                raise
            raise _malformed(path, f"{exc} (after {n_read} complete events)") from None
        except (ET.ParseError, IndexError, TypeError, AttributeError, KeyError) as exc:
            raise _malformed(path, f"{type(exc).__name__}: {exc} (after {n_read} complete events)") from None
    for warning in caught:
        if issubclass(warning.category, RuntimeWarning) and "Parse Error" in str(warning.message):
            raise _malformed(path, f"{warning.message} (after {n_read} complete events)")
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)

    info = init.initInfo
    strategy = int(info.weightingStrategy)
    xsec_pb = float(sum(p.xSection for p in init.procInfo))
    xsec_err_pb = float(np.sqrt(sum(p.error**2 for p in init.procInfo)))
    raw = np.array(xwgtup, dtype=np.float64)
    n = raw.size
    if abs(strategy) in (1, 4):
        weight_ub = raw * PB_TO_UB
    elif abs(strategy) in (2, 3):
        mean = raw.mean() if n else 1.0
        if mean == 0:
            raise ValueError(f"{path}: the mean XWGTUP is zero, cannot normalize to XSECUP (IDWTUP = {strategy})")
        weight_ub = raw * (xsec_pb / mean * PB_TO_UB)
    else:
        raise ValueError(f"{path}: unsupported weighting strategy IDWTUP = {strategy}, allowed: +-1, +-2, +-3, +-4")

    beam_arr = np.array(beam, dtype=np.float64).reshape(n, 5)
    part = np.array(particles, dtype=np.float64).reshape(-1, 5)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.array(n_out, dtype=np.int64), out=offsets[1:])
    metadata = {
        "generator": ", ".join(g.name for g in init.generators if g.name) or "unknown (LHE)",
        "generator_version": ", ".join(g.version for g in init.generators if g.version) or None,
        "source_path": str(path),
        "n_events": n,
        "target": "electron at rest",
        "beam_pdg_ids": (int(info.beamA), int(info.beamB)),
        "beam_energies_gev": (float(info.energyA), float(info.energyB)),
        "weighting_strategy": strategy,
        "cross_section_ub": xsec_pb * PB_TO_UB,
        "cross_section_error_ub": xsec_err_pb * PB_TO_UB,
        "lhe_version": getattr(lhef, "version", None),
    }
    return ExternalEvents(
        event_id=np.arange(1, n + 1, dtype=np.int64),
        weight_ub=weight_ub,
        beam_pdg=beam_arr[:, 0].astype(np.int32),
        beam_px=beam_arr[:, 1],
        beam_py=beam_arr[:, 2],
        beam_pz=beam_arr[:, 3],
        beam_e=beam_arr[:, 4],
        offsets=offsets,
        pdg=part[:, 0].astype(np.int32),
        px=part[:, 1],
        py=part[:, 2],
        pz=part[:, 3],
        e=part[:, 4],
        extra={"xwgtup": raw, "process_id": np.array(process_id, dtype=np.int64)},
        metadata=metadata,
    )


def _append_event(path, index, event, xwgtup, process_id, n_out, beam, particles):
    """Append one pylhe event to the column lists; `index` counts events from 1."""
    incoming = [p for p in event.particles if int(p.status) == _STATUS_INCOMING]
    if len(incoming) != 2:
        raise ValueError(f"{path}: event {index}: expected 2 incoming particles (status -1), found {len(incoming)}")
    at_rest = [
        p for p in incoming
        if int(p.id) == PDG_ELECTRON and np.sqrt(p.px**2 + p.py**2 + p.pz**2) <= _TARGET_AT_REST_TOL_GEV
    ]  # fmt: skip
    if not at_rest:
        raise ValueError(
            f"{path}: event {index}: no incoming electron at rest (|p| <= {_TARGET_AT_REST_TOL_GEV} GeV); "
            "events must be in the laboratory frame of the target electron"
        )
    projectile = incoming[1] if incoming[0] is at_rest[0] else incoming[0]
    beam.append((int(projectile.id), projectile.px, projectile.py, projectile.pz, projectile.e))
    outgoing = [p for p in event.particles if int(p.status) == _STATUS_OUTGOING]
    particles.extend((int(p.id), p.px, p.py, p.pz, p.e) for p in outgoing)
    n_out.append(len(outgoing))
    xwgtup.append(float(event.eventinfo.weight))
    process_id.append(int(event.eventinfo.pid))
