"""Tests of the MESMER reader on a real MESMER 1.1.6 NLO sample, and of the ExternalEvents container."""

import bz2
import gzip
import lzma
import re
from pathlib import Path

import numpy as np
import pytest

from fastsim.io.external import ExternalEvents
from fastsim.io.mesmer import read_mesmer
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV

DATA_DIR = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "mesmer"
SAMPLE = DATA_DIR / "mesmer_nlo_160gev_eemin1_3k.dat.xz"
needs_sample = pytest.mark.skipif(not SAMPLE.is_file(), reason=f"MESMER test sample not found at {SAMPLE}")

# Numbers from the sample's footer and README.
N_EVENTS = 3000
N_WITH_PHOTON = 2070
XS_UB, XS_ERR_UB = 253.17842449933832, 3.8429052563452681


def elastic_electron_energy_gev(beam_energy_gev, theta_e_rad, m_mu_gev, m_e_gev):
    """LO elastic curve: E_e = m_e (1 + r^2 cos^2 th) / (1 - r^2 cos^2 th), r = p_beam / (E_beam + m_e)."""
    p_beam = np.sqrt(beam_energy_gev**2 - m_mu_gev**2)
    rc2 = (p_beam / (beam_energy_gev + m_e_gev) * np.cos(theta_e_rad)) ** 2
    return m_e_gev * (1 + rc2) / (1 - rc2)


@pytest.fixture(scope="module")
def sample():
    if not SAMPLE.is_file():
        pytest.skip(f"MESMER test sample not found at {SAMPLE}")
    return read_mesmer(SAMPLE)


@pytest.fixture(scope="module")
def sample_text():
    if not SAMPLE.is_file():
        pytest.skip(f"MESMER test sample not found at {SAMPLE}")
    with lzma.open(SAMPLE, "rt") as f:
        return f.read()


def test_elastic_formula_reference_value():
    # 160 GeV muon, theta_e = 2 mrad -> 94.42344 GeV (PDG masses).
    e = elastic_electron_energy_gev(160.0, 2e-3, MUON_MASS_GEV, ELECTRON_MASS_GEV)
    assert e == pytest.approx(94.42344, abs=5e-6)


@needs_sample
def test_counts_and_metadata(sample):
    assert sample.n_events == N_EVENTS == len(sample)
    assert np.array_equal(sample.event_id, np.arange(1, N_EVENTS + 1))
    n_photons = np.bincount(np.repeat(np.arange(N_EVENTS), sample.n_particles), sample.pdg == 22, N_EVENTS)
    assert np.count_nonzero(n_photons) == N_WITH_PHOTON
    assert set(np.unique(sample.n_particles)) == {2, 3}
    assert np.all(sample.beam_pdg == -13)  # mu+ beam (Qmu 1)
    meta = sample.metadata
    assert meta["generator"] == "MESMER" and meta["generator_version"] == "1.1.6"
    assert meta["order"] == "NLO" and meta["unweighted"] is False
    assert meta["beam_energy_gev"] == 160.0
    assert meta["cuts"]["e_energy_min_gev"] == 1.0
    assert meta["cuts"]["e_theta_max_rad"] == pytest.approx(0.1)
    assert meta["cuts"]["acoplanarity_cut_rad"] is None
    assert meta["cross_section_ub"] == XS_UB and meta["cross_section_error_ub"] == XS_ERR_UB
    assert meta["n_points"] == N_EVENTS and meta["source_path"] == str(SAMPLE)
    assert sample.extra["vp_coefficients"].shape == (N_EVENTS, 11)


@needs_sample
def test_four_momentum_conservation(sample):
    event_of = np.repeat(np.arange(sample.n_events), sample.n_particles)
    initial = {
        "px": sample.beam_px,
        "py": sample.beam_py,
        "pz": sample.beam_pz,
        "e": sample.beam_e + ELECTRON_MASS_GEV,  # target electron at rest
    }
    for component, p_in in initial.items():
        p_out = np.bincount(event_of, getattr(sample, component), sample.n_events)
        assert np.max(np.abs(p_out - p_in) / sample.beam_e) < 1e-9, component
    assert np.allclose(sample.beam_e, 160.0, rtol=1e-12)


@needs_sample
def test_cross_section_from_weights_matches_footer(sample):
    # MESMER: XS = wnorm * sum(w) / N_points, error = wnorm * sqrt((<w^2> - <w>^2) / N_points).
    w = sample.weight_ub
    assert w.mean() == pytest.approx(XS_UB, rel=1e-12)
    assert w.std() / np.sqrt(w.size) == pytest.approx(XS_ERR_UB, rel=1e-10)
    meta = sample.metadata
    assert meta["wnorm_ub"] * meta["sum_weights"] / meta["n_points"] == pytest.approx(XS_UB, rel=1e-12)
    # NLO weighted sample without negative weights: all weights positive.
    assert meta["n_negative_weights"] == 0 and np.all(w > 0)
    # weight = sum_k c_k * (products of 1 / (1 - Dalpha)): with VP off all products are 1, so the
    # VP-off weight is the sum of the coefficients (same units, same scale factor).
    c = sample.extra["vp_coefficients"]
    np.testing.assert_allclose(c.sum(axis=1), sample.extra["weight_no_vp_ub"], rtol=1e-12)
    # At NLO the NLO weight is the full one.
    assert np.allclose(sample.extra["weight_nlo_ub"], w, rtol=1e-15)


@needs_sample
def test_generation_cuts_honored(sample):
    truth = sample.truth_columns()
    assert np.all(truth["e_energy_gev"] > 1.0)  # Eemin 1
    assert np.all(truth["e_theta_rad"] < 0.1)  # themax 100 mrad
    assert np.all(truth["mu_theta_rad"] < 0.1)  # thmumax 100 mrad
    assert np.all(truth["e_energy_gev"] < 150.0)  # Eemax 150 (header default)


@needs_sample
def test_truth_columns_on_elastic_curve(sample):
    truth = sample.truth_columns()
    assert list(truth) == [
        "event_id", "weight", "e_energy_gev", "e_theta_rad", "e_phi_rad",
        "mu_energy_gev", "mu_theta_rad", "mu_phi_rad", "photon_energy_gev", "n_photons",
    ]  # fmt: skip
    assert np.count_nonzero(truth["n_photons"]) == N_WITH_PHOTON
    assert np.all(truth["photon_energy_gev"][truth["n_photons"] == 0] == 0)
    no_photon = truth["n_photons"] == 0
    # Without a hard photon the kinematics is exactly elastic: with PDG masses up to the
    # relative difference of MESMER's electron mass (0.510998928 MeV, PDG 2012) from today's PDG
    # value (4.4e-8), with the masses of the file's header to rounding.
    expected = elastic_electron_energy_gev(160.0, truth["e_theta_rad"][no_photon], MUON_MASS_GEV, ELECTRON_MASS_GEV)
    assert np.max(np.abs(truth["e_energy_gev"][no_photon] / expected - 1)) < 1e-7
    m_mu, m_e = (sample.metadata[k] for k in ("muon_mass_gev_generator", "electron_mass_gev_generator"))
    beam_e = np.sqrt(sample.beam_pz[no_photon] ** 2 + m_mu**2)
    expected = elastic_electron_energy_gev(beam_e, truth["e_theta_rad"][no_photon], m_mu, m_e)
    assert np.max(np.abs(truth["e_energy_gev"][no_photon] / expected - 1)) < 1e-9
    # Back-to-back in azimuth for elastic events.
    dphi = np.angle(np.exp(1j * (truth["e_phi_rad"] - truth["mu_phi_rad"])))[no_photon]
    assert np.allclose(np.abs(dphi), np.pi, atol=1e-9)
    # Radiative events fall below the elastic curve (energy carried away by the photon).
    radiative = ~no_photon
    expected = elastic_electron_energy_gev(160.0, truth["e_theta_rad"][radiative], MUON_MASS_GEV, ELECTRON_MASS_GEV)
    assert np.all(truth["e_energy_gev"][radiative] < expected * (1 + 1e-7))


@needs_sample
def test_compressed_and_plain_files_agree(sample, sample_text, tmp_path):
    for name, opener in (("a.dat", open), ("a.dat.gz", gzip.open), ("a.dat.bz2", bz2.open)):
        with opener(tmp_path / name, "wt") as f:
            f.write(sample_text)
        other = read_mesmer(tmp_path / name)
        assert other.n_events == N_EVENTS
        for field in ("weight_ub", "offsets", "pdg", "px", "py", "pz", "e", "beam_pz"):
            assert np.array_equal(getattr(other, field), getattr(sample, field)), (name, field)


# --- malformed files: ValueError naming the file and the line ---------------------------------


def _line_of(text: str, pattern: str, occurrence: int = 0) -> int:
    """1-based line number of the `occurrence`-th line matching `pattern`."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if re.search(pattern, line)]
    return hits[occurrence]


def _write(tmp_path, lines_or_text, name="bad.dat"):
    path = tmp_path / name
    text = lines_or_text if isinstance(lines_or_text, str) else "\n".join(lines_or_text) + "\n"
    path.write_text(text)
    return path


def _expect_error(path, lineno, fragment):
    with pytest.raises(ValueError) as info:
        read_mesmer(path)
    message = str(info.value)
    assert str(path) in message
    assert f"line {lineno}:" in message, message
    assert fragment in message, message


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_mesmer(tmp_path / "nope.dat")


@needs_sample
def test_missing_header(sample_text, tmp_path):
    lines = sample_text.splitlines()
    start = _line_of(sample_text, r"</header>")
    _expect_error(_write(tmp_path, lines[start:]), 1, "'<header>'")


@needs_sample
def test_header_without_normalization(sample_text, tmp_path):
    lines = sample_text.splitlines()
    k = _line_of(sample_text, r"Normalization cross section") - 1
    del lines[k : k + 2]
    end = lines.index(" </header>") + 1
    _expect_error(_write(tmp_path, lines), end, "Normalization cross section")


@needs_sample
def test_truncated_record(sample_text, tmp_path):
    lines = sample_text.splitlines()
    start = _line_of(sample_text, r"<event>", occurrence=10)
    path = _write(tmp_path, lines[: start + 8])  # file ends inside the 11th record
    _expect_error(path, start + 9, "truncated")


@needs_sample
def test_record_missing_a_particle(sample_text, tmp_path):
    lines = sample_text.splitlines()
    end = _line_of(sample_text, r"</event>", occurrence=2)  # third record: 3 outgoing particles
    del lines[end - 2]
    _expect_error(_write(tmp_path, lines), end - 2, "declares 3 outgoing particles, found 2")


@needs_sample
def test_wrong_number_of_fields(sample_text, tmp_path):
    lines = sample_text.splitlines()
    k = _line_of(sample_text, r"<event>", occurrence=5) + 4  # the weights line w w_noVP w_lepVP
    lines[k - 1] = " ".join(lines[k - 1].split()[:2])
    _expect_error(_write(tmp_path, lines), k, "expected 3 fields")
    lines = sample_text.splitlines()
    k = _line_of(sample_text, r"<event>", occurrence=7) + 8  # the outgoing muon
    lines[k - 1] += " 1.0"
    _expect_error(_write(tmp_path, lines), k, "expected 4 fields 'pdg px py pz'")


@needs_sample
def test_non_numeric_value(sample_text, tmp_path):
    lines = sample_text.splitlines()
    k = _line_of(sample_text, r"<event>", occurrence=100) + 9  # the outgoing electron
    pdg, px, py, pz = lines[k - 1].split()
    lines[k - 1] = f"{pdg} {px} 0.1x3 {pz}"
    _expect_error(_write(tmp_path, lines), k, "'0.1x3'")
    lines = sample_text.splitlines()
    k = _line_of(sample_text, r"<event>", occurrence=3) + 2  # the event number
    lines[k - 1] = "4.5"
    _expect_error(_write(tmp_path, lines), k, "event number")


@needs_sample
def test_missing_footer_and_garbage(sample_text, tmp_path):
    lines = sample_text.splitlines()
    footer = _line_of(sample_text, r"<footer>")
    _expect_error(_write(tmp_path, lines[: footer - 1]), footer, "'<event>' or '<footer>'")
    lines = sample_text.splitlines()
    k = _line_of(sample_text, r"<event>", occurrence=42)
    lines[k - 1] = " <evnt>"
    _expect_error(_write(tmp_path, lines), k, "expected '<event>' or '<footer>'")


@needs_sample
def test_footer_sum_of_weights_mismatch(sample_text, tmp_path):
    lines = sample_text.splitlines()
    start, end = _line_of(sample_text, r"<event>", 0), _line_of(sample_text, r"</event>", 0)
    del lines[start - 1 : end]  # drop a whole record: a silently truncated sample
    with pytest.raises(ValueError, match="sum of weights"):
        read_mesmer(_write(tmp_path, lines))


@needs_sample
def test_truncated_xz_stream(tmp_path):
    data = SAMPLE.read_bytes()
    path = tmp_path / "cut.dat.xz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.dat\.xz: line \d+"):
        read_mesmer(path)


@needs_sample
def test_fortran_three_digit_exponent(sample_text, tmp_path):
    # gfortran list-directed output writes 1.5E-106 as "1.5000000000000000-106".
    text = sample_text.replace("1.8447476871874560E-006", "1.8447476871874560-106", 1)
    assert text != sample_text
    events = read_mesmer(_write(tmp_path, text))
    assert events.px[events.offsets[2] + 2] == 1.8447476871874560e-106  # photon of event 3


@needs_sample
def test_rejected_point_record(sample_text, tmp_path):
    # MESMER writes a rejected point as a record with 0 outgoing particles, zero weights, a VP line
    # and dummy zero momenta: kept as an event of weight 0 without outgoing particles.
    lines = sample_text.splitlines()
    footer = _line_of(sample_text, r"<footer>")
    record = ["<event>", "20261125", "3001", "0", "0.0 0.0 0.0", "0.0 0.0", " ".join(["0.0"] * 11),
              "-13 0.0 0.0 159.99996511346035", "-13 0.0 0.0 0.0", "11 0.0 0.0 0.0", "</event>"]  # fmt: skip
    events = read_mesmer(_write(tmp_path, lines[: footer - 1] + record + lines[footer - 1 :]))
    assert events.n_events == N_EVENTS + 1
    assert events.weight_ub[-1] == 0 and events.n_particles[-1] == 0
    assert events.weight_ub.mean() == pytest.approx(XS_UB, rel=1e-12)  # N_points from the footer
    truth = events.truth_columns()
    assert np.isnan(truth["e_energy_gev"][-1]) and np.isnan(truth["mu_theta_rad"][-1])


# --- the ExternalEvents container ---------------------------------------------------------------


def _rotation(axis, angle):
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _minimal_rotation(n):
    """Rotation taking z onto the unit vector n about the axis z x n."""
    n = np.asarray(n, dtype=float) / np.linalg.norm(n)
    return _rotation(np.cross([0, 0, 1.0], n), np.arctan2(np.hypot(n[0], n[1]), n[2]))


def _hand_events(rotation=np.eye(3)):
    """Two events, 160 GeV mu- along z (then rotated): an elastic one and one with a photon."""
    p_beam = np.array([0.0, 0.0, np.sqrt(160.0**2 - MUON_MASS_GEV**2)])
    theta_e, phi_e = 2e-3, 0.7
    e_e = elastic_electron_energy_gev(160.0, theta_e, MUON_MASS_GEV, ELECTRON_MASS_GEV)
    p_e = np.sqrt(e_e**2 - ELECTRON_MASS_GEV**2) * np.array(
        [np.sin(theta_e) * np.cos(phi_e), np.sin(theta_e) * np.sin(phi_e), np.cos(theta_e)]
    )
    p_mu = p_beam - p_e
    k = np.array([1e-3, -2e-3, 3.0])  # photon; the second event need not conserve momentum here
    momenta = np.array([p_mu, p_e, 0.9 * p_mu, 0.9 * p_e, k]) @ rotation.T
    beam = np.array([p_beam, p_beam]) @ rotation.T
    pdg = np.array([13, 11, 13, 11, 22])
    masses = np.array([MUON_MASS_GEV, ELECTRON_MASS_GEV, MUON_MASS_GEV, ELECTRON_MASS_GEV, 0.0])
    return ExternalEvents(
        event_id=[7, 8],
        weight_ub=[1.5, 2.5],
        beam_pdg=[13, 13],
        beam_px=beam[:, 0],
        beam_py=beam[:, 1],
        beam_pz=beam[:, 2],
        beam_e=[160.0, 160.0],
        offsets=[0, 2, 5],
        pdg=pdg,
        px=momenta[:, 0],
        py=momenta[:, 1],
        pz=momenta[:, 2],
        e=np.sqrt(np.sum(momenta**2, axis=1) + masses**2),
        extra={"tag": np.array([1, 2])},
        metadata={"generator": "by hand"},
    )


def test_truth_columns_by_hand():
    truth = _hand_events().truth_columns()
    assert truth["e_theta_rad"][0] == pytest.approx(2e-3, rel=1e-12)
    assert truth["e_phi_rad"][0] == pytest.approx(0.7, rel=1e-12)
    assert truth["e_energy_gev"][0] == pytest.approx(94.42344, abs=5e-6)
    assert truth["mu_phi_rad"][0] == pytest.approx(0.7 - np.pi, rel=1e-12)
    assert truth["n_photons"].tolist() == [0, 1]
    assert truth["photon_energy_gev"][1] == pytest.approx(np.sqrt(1e-6 + 4e-6 + 9.0), rel=1e-15)
    assert truth["event_id"].tolist() == [7, 8] and truth["weight"].tolist() == [1.5, 2.5]


@pytest.mark.parametrize("tilt_rad", [3e-4, 0.05, 1.2])
def test_truth_angles_relative_to_tilted_beam(tilt_rad):
    reference = _hand_events().truth_columns()
    n = np.array([np.sin(tilt_rad) * np.cos(2.0), np.sin(tilt_rad) * np.sin(2.0), np.cos(tilt_rad)])
    # Minimal rotation z -> n: polar angles and azimuths are unchanged.
    tilted = _hand_events(_minimal_rotation(n)).truth_columns()
    for key in ("e_theta_rad", "mu_theta_rad", "e_phi_rad", "mu_phi_rad", "e_energy_gev", "photon_energy_gev"):
        np.testing.assert_allclose(tilted[key], reference[key], rtol=1e-9, atol=1e-15, err_msg=key)
    # Any rotation (here with a roll about the beam): polar angles and the acoplanarity unchanged.
    rolled = _hand_events(_minimal_rotation(n) @ _rotation([0, 0, 1], 0.4)).truth_columns()
    for key in ("e_theta_rad", "mu_theta_rad"):
        np.testing.assert_allclose(rolled[key], reference[key], rtol=1e-9, err_msg=key)
    dphi_rolled = rolled["e_phi_rad"] - rolled["mu_phi_rad"]
    dphi_reference = reference["e_phi_rad"] - reference["mu_phi_rad"]
    np.testing.assert_allclose(np.exp(1j * dphi_rolled), np.exp(1j * dphi_reference), rtol=0, atol=1e-9)
    # Angles naively taken from the z axis differ: the rotation to the beam frame matters.
    events = _hand_events(_minimal_rotation(n))
    naive_theta_e = np.arctan2(np.hypot(events.px[1], events.py[1]), events.pz[1])
    assert abs(naive_theta_e - reference["e_theta_rad"][0]) > tilt_rad / 10


def test_select():
    events = _hand_events()
    for selector in (np.array([False, True]), np.array([1])):
        one = events.select(selector)
        assert one.n_events == 1 and one.offsets.tolist() == [0, 3]
        assert one.pdg.tolist() == [13, 11, 22] and one.event_id.tolist() == [8]
        assert np.array_equal(one.px, events.px[2:]) and one.extra["tag"].tolist() == [2]
    swapped = events.select(np.array([1, 0]))
    assert swapped.offsets.tolist() == [0, 3, 5] and swapped.pdg.tolist() == [13, 11, 22, 13, 11]
    assert events.select(np.zeros(2, dtype=bool)).n_events == 0
    with pytest.raises(ValueError, match="mask"):
        events.select(np.array([True]))


def test_validation():
    good = _hand_events()
    fields = {name: getattr(good, name) for name in good.__dataclass_fields__}
    with pytest.raises(ValueError, match="weight_ub"):
        ExternalEvents(**{**fields, "weight_ub": [1.0]})
    with pytest.raises(ValueError, match="offsets"):
        ExternalEvents(**{**fields, "offsets": [0, 3, 2]})
    with pytest.raises(ValueError, match="offsets"):
        ExternalEvents(**{**fields, "offsets": [0, 2, 4]})
    with pytest.raises(ValueError, match="non-decreasing"):
        ExternalEvents(**{**fields, "offsets": [0, 6, 5]})
    with pytest.raises(ValueError, match="extra"):
        ExternalEvents(**{**fields, "extra": {"tag": np.arange(3)}})
    assert good.pdg.dtype == np.int32 and good.offsets.dtype == np.int64 and good.px.dtype == np.float64
