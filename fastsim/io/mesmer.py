"""Read MESMER event files (ASCII storage format, ``storemode 0``) into `ExternalEvents`.

MESMER (Alacevich et al., JHEP 02 (2019) 155; Carloni Calame et al., JHEP 11 (2020) 028;
https://github.com/cm-cc/mesmer) is the NLO/NNLO Monte Carlo generator for
mu e -> mu e (gamma, gamma, pairs). With ``store yes`` it
writes (format "version 2" of its STANDALONE.md) a ``<header>`` with the run parameters, one
``<event>`` record per event and a ``<footer>`` with the sample's cross section::

    <event>
     TAG                              sample tag (the seed), the same in every record
     N                                event number
     NFS                              number of outgoing particles
     w  w_noVP  w_lepVP               weight with full, without, with leptonic-only VP
     w_LO  w_NLO                      weights to get LO (NLO) distributions from NLO (NNLO) samples
     c_0 ... c_10                     VP reweighting coefficients (only with ``store yes yes``)
     pdg px py pz                     incoming muon (GeV)
     pdg px py pz                     NFS lines: mu, e, [pair e+ e- or mu+ mu-], photons
    </event>

Compressed files (``.xz``, ``.gz``, ``.bz2``, e.g. ``storemode 2``) are read transparently.

Weight normalization
--------------------
MESMER stores each weight divided by the normalization cross section ``wnorm`` printed in the
header ("Normalization cross section (mub)"); the footer's "(sub-)sample weighted XS (mub)" is
``wnorm * sum(w) / N_points``, with ``N_points`` the footer's "total shut points", and its error
``wnorm * sqrt((<w^2> - <w>^2) / N_points)`` (checked on a MESMER 1.1.6 sample to 1e-14). For
weighted samples this reader therefore sets::

    weight_ub = w * wnorm * n_stored / N_points

so that ``weight_ub.sum() / n_events`` equals the footer's cross section (n_stored = N_points
when no zero-weight points were dropped). The other weights of the record and the VP
coefficients (which sum to ``w`` when multiplied by products of 1/(1 - Dalpha)) get the same
factor; summed, the coefficients give ``w_noVP``. For unweighted samples the factor is
``xs_footer / mean(w)`` (not checked on a sample).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from fastsim.io.external import ExternalEvents, energy_from_mass_gev, mass_gev
from fastsim.units import ELECTRON_MASS_GEV

_MRAD_TO_RAD = 1e-3
_N_VP_COEFFICIENTS = 11
# Relative agreement required between the footer's sum of weights and the sum over the records
# (both printed with 17 digits): a larger mismatch means a truncated or concatenated file.
_SUM_OF_WEIGHTS_RTOL = 1e-9
_FORTRAN_EXPONENT = re.compile(r"^([+-]?[0-9.]+)([+-][0-9]{3})$")


def _open_text(path: Path):
    """Text stream of a plain or .xz/.gz/.bz2 compressed file."""
    suffix = path.suffix.lower()
    if suffix == ".xz":
        return lzma.open(path, "rt", encoding="ascii")
    if suffix == ".gz":
        return gzip.open(path, "rt", encoding="ascii")
    if suffix == ".bz2":
        return bz2.open(path, "rt", encoding="ascii")
    return open(path, encoding="ascii")


class _Lines:
    """Non-blank stripped lines of a file with their line numbers, for error messages."""

    def __init__(self, path: Path, stream):
        self.path = path
        self._iter = enumerate(stream, start=1)
        self.lineno = 0

    def error(self, message: str, lineno: int | None = None) -> ValueError:
        return ValueError(f"{self.path}: line {self.lineno if lineno is None else lineno}: {message}")

    def next(self, expected: str) -> str:
        for self.lineno, line in self._iter:
            line = line.strip()
            if line:
                return line
        raise ValueError(f"{self.path}: line {self.lineno + 1}: file ends (truncated?) where {expected} was expected")

    def rest(self) -> Iterator[str]:
        for self.lineno, line in self._iter:
            line = line.strip()
            if line:
                yield line


def _to_float(token: str, lines: _Lines, lineno: int, what: str) -> float:
    try:
        return float(token)
    except ValueError:
        # Fortran list-directed output drops the 'E' of 3-digit exponents (1.0-100) and may use 'D'.
        fixed = _FORTRAN_EXPONENT.sub(r"\1E\2", token.replace("D", "E").replace("d", "e"))
        try:
            return float(fixed)
        except ValueError:
            raise lines.error(f"expected a number in {what}, got {token!r}", lineno) from None


def _numbers(line: str, n: int, lines: _Lines, lineno: int, what: str) -> list[float]:
    tokens = line.split()
    if len(tokens) != n:
        raise lines.error(f"expected {n} fields ({what}), got {len(tokens)}: {line!r}", lineno)
    try:
        return list(map(float, tokens))  # fast path; the slow one handles Fortran exponents and errors
    except ValueError:
        return [_to_float(t, lines, lineno, what) for t in tokens]


def _integer(line: str, lines: _Lines, lineno: int, what: str) -> int:
    try:
        return int(line)
    except ValueError:
        raise lines.error(f"expected an integer ({what}), got {line!r}", lineno) from None


def _particle(line: str, lines: _Lines, lineno: int, what: str) -> tuple[int, float, float, float]:
    tokens = line.split()
    if len(tokens) != 4:
        raise lines.error(f"expected 4 fields 'pdg px py pz' ({what}), got {len(tokens)}: {line!r}", lineno)
    pdg = _integer(tokens[0], lines, lineno, f"PDG id of the {what}")
    try:
        return (pdg, float(tokens[1]), float(tokens[2]), float(tokens[3]))
    except ValueError:
        return (pdg, *(_to_float(t, lines, lineno, what) for t in tokens[1:]))


# Header labels followed by their value on the next line: metadata key, type.
_HEADER_VALUES = {
    "SAMPLE TAG": ("sample_tag", str),
    "Unweighted events (1 = TRUE, 0 = FALSE)": ("unweighted", int),
    "Nominal muon beam energy (GeV)": ("beam_energy_gev", float),
    "RMS for gaussian energy spread (GeV)": ("beam_energy_spread_gev", float),
    "If muon beam is read externally or not (beam profile)": ("beam_profile_external", str),
    "Muon charge": ("muon_charge", float),
    "Muon mass (GeV)": ("muon_mass_gev_generator", float),
    "Electron mass (GeV)": ("electron_mass_gev_generator", float),
    "1/alpha(0)": ("inverse_alpha0_generator", float),
    "Normalization cross section (mub)": ("wnorm_ub", float),
    "Maximum weight [guessed]": ("max_weight_guessed", float),
    "If coefficients for VP reweighting are present (0/1)": ("has_vp_coefficients", int),
}
# Generation cuts "name = value [value]": metadata key, unit factor to GeV or rad.
_HEADER_CUTS = {
    "Eemin": ("e_energy_min_gev", 1.0),
    "Eemax": ("e_energy_max_gev", 1.0),
    "themin": ("e_theta_min_rad", _MRAD_TO_RAD),
    "themax": ("e_theta_max_rad", _MRAD_TO_RAD),
    "thmumin": ("mu_theta_min_rad", _MRAD_TO_RAD),
    "thmumax": ("mu_theta_max_rad", _MRAD_TO_RAD),
    "Ethr": ("extra_lepton_energy_threshold_gev", 1.0),
    "ththr": ("extra_lepton_theta_max_rad", _MRAD_TO_RAD),
    "acoplanarity cut": ("acoplanarity_cut_rad", _MRAD_TO_RAD),
    "elasticity cut": ("elasticity_cut_rad", _MRAD_TO_RAD),
}
_FOOTER_VALUES = {
    "(sub-)sample weighted XS (mub)": "cross_section",
    "total shut points (weighted events)": "n_points",
    "true wmax": "max_weight",
    "N. points with negative weight": "n_negative_weights",
    "Sum of weights and weights^2": "sum_weights",
}


def _parse_header(lines: _Lines) -> dict:
    first = lines.next("'<header>'")
    if first != "<header>":
        raise lines.error(f"expected '<header>' (is this a MESMER event file?), got {first!r}")
    body: list[tuple[int, str]] = []
    while (line := lines.next("'</header>'")) != "</header>":
        if line == "<event>":
            raise lines.error("'<event>' inside the header: expected '</header>' first")
        body.append((lines.lineno, line))
    meta: dict = {"header_text": "\n".join(text for _, text in body)}
    cuts: dict = {}
    for i, (lineno, text) in enumerate(body):
        if text.startswith("Program version:"):
            version = text.split(":", 1)[1].split()
            meta["generator_version"] = version[-1] if version else ""
        elif text.startswith("Running mode:"):
            meta["order"] = text.split(":", 1)[1].strip()
        elif text in _HEADER_VALUES and i + 1 < len(body):
            key, kind = _HEADER_VALUES[text]
            value_lineno, value = body[i + 1]
            if kind is str:
                meta[key] = value
            elif kind is int:
                meta[key] = _integer(value, lines, value_lineno, text)
            else:
                meta[key] = _numbers(value, 1, lines, value_lineno, text)[0]
        elif "=" in text:
            name, _, value = text.partition("=")
            name = name.strip()
            if name in _HEADER_CUTS:
                key, factor = _HEADER_CUTS[name]
                values = [_to_float(v, lines, lineno, name) for v in value.split()]
                if len(values) == 1:
                    cuts[key] = values[0] * factor
                elif len(values) == 2:  # "applied flag, value": None when the cut is off
                    cuts[key] = values[1] * factor if values[0] != 0 else None
                else:
                    raise lines.error(f"expected 1 or 2 numbers after '{name} =', got {value!r}", lineno)
    meta["cuts"] = cuts
    if "wnorm_ub" not in meta:
        raise lines.error("header has no 'Normalization cross section (mub)' (wnorm): cannot normalize weights")
    if not meta["wnorm_ub"] > 0:
        raise lines.error(f"header's normalization cross section must be > 0, got {meta['wnorm_ub']}")
    for key in ("unweighted", "has_vp_coefficients"):
        if key in meta:
            meta[key] = bool(meta[key])
    if "beam_profile_external" in meta:
        meta["beam_profile_external"] = meta["beam_profile_external"].lower() == "yes"
    return meta


def _parse_footer(lines: _Lines) -> dict:
    body: list[tuple[int, str]] = []
    while (line := lines.next("'</footer>'")) != "</footer>":
        body.append((lines.lineno, line))
    footer: dict = {}
    for i, (_, text) in enumerate(body):
        if text in _FOOTER_VALUES and i + 1 < len(body):
            key = _FOOTER_VALUES[text]
            value_lineno, value = body[i + 1]
            if key == "cross_section":
                xs, _, err = value.partition("+-")
                footer["cross_section_ub"] = _to_float(xs.strip(), lines, value_lineno, text)
                footer["cross_section_error_ub"] = _to_float(err.strip(), lines, value_lineno, text)
            elif key == "sum_weights":
                footer["sum_weights"], footer["sum_weights2"] = _numbers(value, 2, lines, value_lineno, text)
            elif key in ("n_points", "n_negative_weights"):
                footer[key] = _integer(value, lines, value_lineno, text)
            else:
                footer[key] = _numbers(value, 1, lines, value_lineno, text)[0]
    for line in lines.rest():
        raise lines.error(f"unexpected content after '</footer>': {line!r}")
    for key in ("cross_section_ub", "n_points"):
        if key not in footer:
            raise lines.error(f"footer has no {key} ('(sub-)sample weighted XS' and 'total shut points' needed)")
    return footer


def read_mesmer(path) -> ExternalEvents:
    """Read a MESMER event file (plain ASCII, or compressed .xz/.gz/.bz2).

    Parameters
    ----------
    path : str or path-like
        The file written by MESMER with ``store yes [yes]`` and ``storemode 0`` (or 2).

    Returns
    -------
    ExternalEvents
        ``weight_ub`` normalized as explained in the module docstring; ``extra`` holds
        ``weight_no_vp_ub``, ``weight_lep_vp_ub``, ``weight_lo_ub``, ``weight_nlo_ub`` and, if
        stored, ``vp_coefficients`` (n, 11), all in ub. Outgoing energies are computed from the
        PDG masses of the `particle` package (MESMER writes 3-momenta only); the header's masses
        are kept in the metadata.

    Raises
    ------
    ValueError
        Missing file, missing header or footer, truncated record, wrong number of fields or a
        non-numeric value: the message names the file, the line number and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: MESMER event file not found")
    cols = _Columns()
    lines = _Lines(path, [])
    try:
        with _open_text(path) as stream:
            lines = _Lines(path, stream)
            meta = _parse_header(lines)
            has_vp = meta.get("has_vp_coefficients")  # None (older headers): inferred per record
            while True:
                line = lines.next("'<event>' or '<footer>'")
                if line == "<footer>":
                    footer = _parse_footer(lines)
                    break
                if line != "<event>":
                    raise lines.error(f"expected '<event>' or '<footer>', got {line!r}")
                start = lines.lineno
                record: list[tuple[int, str]] = []
                while (line := lines.next(f"'</event>' closing the record of line {start}")) != "</event>":
                    if line.startswith("<"):
                        raise lines.error(f"expected '</event>' closing the record of line {start}, got {line!r}")
                    record.append((lines.lineno, line))
                _parse_record(record, lines, start, meta, has_vp, cols)
                if has_vp is None:  # old header without the flag: the first record decides
                    has_vp = bool(cols.vp)
    except (lzma.LZMAError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: line {lines.lineno + 1}: cannot read the (compressed) file: {exc}") from None
    return _build(path, meta, footer, cols)


@dataclass
class _Columns:
    """Per-event and per-particle lists filled record by record."""

    event_id: list = field(default_factory=list)
    n_out: list = field(default_factory=list)
    weights: list = field(default_factory=list)  # w, w_noVP, w_lepVP
    weights_order: list = field(default_factory=list)  # w_LO, w_NLO
    vp: list = field(default_factory=list)
    beam: list = field(default_factory=list)  # pdg px py pz
    particles: list = field(default_factory=list)  # pdg px py pz


def _parse_record(record, lines: _Lines, start: int, meta: dict, has_vp: bool | None, cols: _Columns):
    """Append one ``<event>`` record (list of (line number, text)) to the column lists."""
    event_id, n_out, weights, weights_order = cols.event_id, cols.n_out, cols.weights, cols.weights_order
    vp, beam, particles = cols.vp, cols.beam, cols.particles
    if len(record) < 6:
        last = record[-1][0] if record else start
        raise lines.error(f"record starting at line {start} has {len(record)} lines, expected at least 6", last)
    (l_tag, tag), (l_id, number), (l_nfs, nfs) = record[:3]
    if tag != meta.get("sample_tag", tag):
        raise lines.error(f"sample tag {tag!r} differs from the header's {meta['sample_tag']!r} (concatenated files?)", l_tag)
    event_id.append(_integer(number, lines, l_id, "event number"))
    nfs = _integer(nfs, lines, l_nfs, "number of outgoing particles")
    weights.append(_numbers(record[3][1], 3, lines, record[3][0], "weights w, w_noVP, w_lepVP"))
    weights_order.append(_numbers(record[4][1], 2, lines, record[4][0], "weights w_LO, w_NLO"))
    k = 5
    # A rejected point (0 outgoing particles, zero weights) always has a VP line and dummy particles.
    if has_vp is None or nfs == 0:
        vp_line = len(record[5][1].split()) == _N_VP_COEFFICIENTS
    else:
        vp_line = has_vp
    if vp_line:
        coefficients = _numbers(record[k][1], _N_VP_COEFFICIENTS, lines, record[k][0], "VP reweighting coefficients")
        k += 1
        if has_vp is not False:
            vp.append(coefficients)
    elif has_vp:
        vp.append([0.0] * _N_VP_COEFFICIENTS)
    if len(record) <= k:
        raise lines.error(f"record starting at line {start} ends before the incoming muon line", record[-1][0])
    beam.append(_particle(record[k][1], lines, record[k][0], "incoming muon"))
    try:
        mass_gev(beam[-1][0])
    except ValueError as exc:
        raise lines.error(str(exc), record[k][0]) from None
    outgoing = record[k + 1 :]
    if nfs == 0:
        for lineno, text in outgoing:
            if any(v != 0.0 for v in _particle(text, lines, lineno, "dummy particle")[1:]):
                raise lines.error("record with 0 outgoing particles has a non-zero momentum", lineno)
        outgoing = []
    elif len(outgoing) != nfs:
        raise lines.error(
            f"record starting at line {start} declares {nfs} outgoing particles, found {len(outgoing)} particle lines",
            record[-1][0],
        )
    for lineno, text in outgoing:
        particles.append(_particle(text, lines, lineno, "outgoing particle"))
        try:
            mass_gev(particles[-1][0])
        except ValueError as exc:
            raise lines.error(str(exc), lineno) from None
    n_out.append(len(outgoing))


def _build(path: Path, meta: dict, footer: dict, cols: _Columns) -> ExternalEvents:
    event_id, n_out, weights, weights_order = cols.event_id, cols.n_out, cols.weights, cols.weights_order
    vp, beam, particles = cols.vp, cols.beam, cols.particles
    n = len(event_id)
    w = np.array(weights, dtype=np.float64).reshape(n, 3)
    w_order = np.array(weights_order, dtype=np.float64).reshape(n, 2)
    sum_w = float(w[:, 0].sum())
    if "sum_weights" in footer and not np.isclose(sum_w, footer["sum_weights"], rtol=_SUM_OF_WEIGHTS_RTOL, atol=0):
        raise ValueError(
            f"{path}: footer's sum of weights {footer['sum_weights']!r} differs from the sum over the "
            f"{n} records {sum_w!r}: truncated or concatenated file?"
        )
    if meta.get("unweighted"):
        scale = footer["cross_section_ub"] / (sum_w / n) if n else 0.0
    else:
        scale = meta["wnorm_ub"] * n / footer["n_points"] if footer["n_points"] else 0.0
    beam_arr = np.array(beam, dtype=np.float64).reshape(n, 4)
    part = np.array(particles, dtype=np.float64).reshape(-1, 4)
    pdg = part[:, 0].astype(np.int32)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.array(n_out, dtype=np.int64), out=offsets[1:])
    beam_pdg = beam_arr[:, 0].astype(np.int32)
    extra = {
        "weight_no_vp_ub": w[:, 1] * scale,
        "weight_lep_vp_ub": w[:, 2] * scale,
        "weight_lo_ub": w_order[:, 0] * scale,
        "weight_nlo_ub": w_order[:, 1] * scale,
    }
    if vp:
        extra["vp_coefficients"] = np.array(vp, dtype=np.float64).reshape(n, _N_VP_COEFFICIENTS) * scale
    metadata = {
        "generator": "MESMER",
        "source_path": str(path),
        "n_events": n,
        "target": f"electron at rest (m_e = {ELECTRON_MASS_GEV} GeV)",
        **meta,
        **footer,
        "weight_scale_ub": scale,
    }
    return ExternalEvents(
        event_id=np.array(event_id, dtype=np.int64),
        weight_ub=w[:, 0] * scale,
        beam_pdg=beam_pdg,
        beam_px=beam_arr[:, 1],
        beam_py=beam_arr[:, 2],
        beam_pz=beam_arr[:, 3],
        beam_e=energy_from_mass_gev(beam_pdg, beam_arr[:, 1], beam_arr[:, 2], beam_arr[:, 3]),
        offsets=offsets,
        pdg=pdg,
        px=part[:, 1],
        py=part[:, 2],
        pz=part[:, 3],
        e=energy_from_mass_gev(pdg, part[:, 1], part[:, 2], part[:, 3]),
        extra=extra,
        metadata=metadata,
    )
