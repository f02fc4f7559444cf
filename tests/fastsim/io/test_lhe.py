"""Tests of the LHE reader on small hand-written files of mu- e- -> mu- e- (gamma) at 160 GeV."""

import gzip
import importlib.util
import sys

import numpy as np
import pytest

from fastsim.io.lhe import read_lhe
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV

# Every test except test_missing_pylhe needs pylhe (in the [test] and [lhe] extras).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("pylhe") is None, reason="pylhe is not installed")

M_MU, M_E = MUON_MASS_GEV, ELECTRON_MASS_GEV
E_BEAM = 160.0
P_BEAM = np.sqrt(E_BEAM**2 - M_MU**2)


def _four(m, p3):
    p3 = np.asarray(p3, dtype=float)
    return np.array([np.sqrt(m * m + p3 @ p3), *p3])


def _boost(p, beta):
    """Lorentz boost of the 4-vector p = (E, px, py, pz) by the velocity beta (3-vector)."""
    b2 = beta @ beta
    gamma = 1 / np.sqrt(1 - b2)
    bp = beta @ p[1:]
    e = gamma * (p[0] + bp)
    p3 = p[1:] + ((gamma - 1) * bp / b2 + gamma * p[0]) * beta
    return np.array([e, *p3])


def elastic_event(theta_e_rad, phi_e_rad):
    """Outgoing (mu, e) 4-momenta of elastic scattering on an electron at rest."""
    r2c2 = (P_BEAM / (E_BEAM + M_E) * np.cos(theta_e_rad)) ** 2
    e_e = M_E * (1 + r2c2) / (1 - r2c2)
    p_e = np.sqrt(e_e**2 - M_E**2) * np.array(
        [np.sin(theta_e_rad) * np.cos(phi_e_rad), np.sin(theta_e_rad) * np.sin(phi_e_rad), np.cos(theta_e_rad)]
    )
    return _four(M_MU, np.array([0, 0, P_BEAM]) - p_e), _four(M_E, p_e)


def radiative_event(photon_p3, cos_star, phi_star):
    """Outgoing (mu, e, gamma): the photon given, mu e from the 2-body decay of the rest."""
    k = _four(0.0, photon_p3)
    q = np.array([E_BEAM + M_E, 0, 0, P_BEAM]) - k
    m_q = np.sqrt(q[0] ** 2 - q[1:] @ q[1:])
    p_star = np.sqrt((m_q**2 - (M_MU + M_E) ** 2) * (m_q**2 - (M_MU - M_E) ** 2)) / (2 * m_q)
    sin_star = np.sqrt(1 - cos_star**2)
    direction = np.array([sin_star * np.cos(phi_star), sin_star * np.sin(phi_star), cos_star])
    beta = q[1:] / q[0]
    return _boost(_four(M_MU, p_star * direction), beta), _boost(_four(M_E, -p_star * direction), beta), k


EVENTS = [
    (2.5e8, [elastic_event(2e-3, 0.3)]),
    (2.7e8, [elastic_event(10e-3, -2.0)]),
    (2.2e8, [radiative_event([4e-3, 1e-3, 20.0], 0.3, 1.0)]),
]


def _particle_line(pdg, status, p, mother=(0, 0)):
    m = np.sqrt(max(p[0] ** 2 - p[1:] @ p[1:], 0.0))
    return (
        f"{pdg:9d} {status:2d} {mother[0]:4d} {mother[1]:4d} 0 0 "
        + " ".join(repr(float(x)) for x in (p[1], p[2], p[3], p[0], m))
        + " 0.0 9.0"
    )


def write_lhe(path, idwtup=-4, xsecup_pb=2.4667e8, weights_pb=None, target_p3=(0.0, 0.0, 0.0), opener=open):
    """A small LHE file: mu- (160 GeV along z) on e- at rest -> mu- e- (gamma)."""
    beam = _four(M_MU, [0, 0, P_BEAM])
    target = _four(M_E, target_p3)
    lines = [
        '<LesHouchesEvents version="3.0">',
        "<header>",
        "<!-- written by hand for the muone-toolkit tests -->",
        "</header>",
        "<init>",
        f" 13 11 {E_BEAM!r} {M_E!r} 0 0 0 0 {idwtup} 1",
        f" {xsecup_pb!r} 1.0e6 3.0e8 1",
        '<generator name="handwritten" version="1.0">muone-toolkit tests</generator>',
        "</init>",
    ]
    for i, (xwgtup, (outgoing,)) in enumerate(EVENTS):
        weight = xwgtup if weights_pb is None else weights_pb[i]
        lines += ["<event>", f" {2 + len(outgoing)} 1 {float(weight)!r} {E_BEAM!r} 0.0072973525693 0.0"]
        lines += [_particle_line(13, -1, beam), _particle_line(11, -1, target)]
        lines += [_particle_line(pdg, 1, p, (1, 2)) for pdg, p in zip((13, 11, 22), outgoing)]
        lines += ["</event>"]
    lines.append("</LesHouchesEvents>")
    with opener(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_event_helpers_conserve_momentum():
    for _, (outgoing,) in EVENTS:
        total = np.sum(outgoing, axis=0)
        # float64 rounding of the boost (gamma ~ 400 for the radiative event) limits this to ~1e-11.
        np.testing.assert_allclose(total, [E_BEAM + M_E, 0, 0, P_BEAM], rtol=0, atol=1e-10 * E_BEAM)


@pytest.mark.parametrize("opener", [open, gzip.open])
def test_read_weighted_lhe(tmp_path, opener):
    path = write_lhe(tmp_path / "events.lhe", idwtup=-4, opener=opener)
    events = read_lhe(path)
    assert events.n_events == 3
    assert events.event_id.tolist() == [1, 2, 3]
    assert events.offsets.tolist() == [0, 2, 4, 7]
    assert events.pdg.tolist() == [13, 11, 13, 11, 13, 11, 22]
    # IDWTUP = -4: the cross section is the mean of XWGTUP; pb -> ub.
    np.testing.assert_allclose(events.weight_ub, [250.0, 270.0, 220.0], rtol=1e-15)
    np.testing.assert_allclose(events.extra["xwgtup"], [2.5e8, 2.7e8, 2.2e8], rtol=0)
    assert events.metadata["cross_section_ub"] == pytest.approx(246.67)
    assert events.metadata["weighting_strategy"] == -4
    assert events.metadata["generator"] == "handwritten" and events.metadata["generator_version"] == "1.0"
    # Beam: the incoming muon; the target electron at rest is not stored.
    assert np.all(events.beam_pdg == 13)
    np.testing.assert_allclose(events.beam_e, E_BEAM, rtol=1e-15)
    np.testing.assert_allclose(events.beam_pz, P_BEAM, rtol=1e-15)
    # Momenta read back exactly, and 4-momentum is conserved.
    expected = np.concatenate([np.array(outgoing) for _, (outgoing,) in EVENTS])
    for column, name in enumerate(("e", "px", "py", "pz")):
        np.testing.assert_array_equal(getattr(events, name), expected[:, column])
    event_of = np.repeat(np.arange(3), events.n_particles)
    np.testing.assert_allclose(np.bincount(event_of, events.e), events.beam_e + M_E, rtol=1e-10)
    np.testing.assert_allclose(np.bincount(event_of, events.pz), events.beam_pz, rtol=1e-10)
    truth = events.truth_columns()
    np.testing.assert_allclose(truth["e_theta_rad"][:2], [2e-3, 10e-3], rtol=1e-10)
    np.testing.assert_allclose(truth["e_phi_rad"][:2], [0.3, -2.0], rtol=1e-10)
    assert truth["n_photons"].tolist() == [0, 0, 1]
    assert truth["photon_energy_gev"][2] == pytest.approx(np.sqrt(4e-3**2 + 1e-3**2 + 20.0**2), rel=1e-15)


def test_unit_weight_lhe_normalized_to_xsecup(tmp_path):
    # IDWTUP = 3: XWGTUP carries only the sign; the cross section is XSECUP.
    path = write_lhe(tmp_path / "unit.lhe", idwtup=3, xsecup_pb=2.4e8, weights_pb=[1.0, 1.0, 1.0])
    events = read_lhe(path)
    np.testing.assert_allclose(events.weight_ub, 240.0, rtol=1e-15)
    assert events.weight_ub.mean() == pytest.approx(events.metadata["cross_section_ub"], rel=1e-15)


def test_unsupported_weighting_strategy(tmp_path):
    with pytest.raises(ValueError, match="IDWTUP = 7"):
        read_lhe(write_lhe(tmp_path / "bad.lhe", idwtup=7))


def test_target_not_at_rest(tmp_path):
    with pytest.raises(ValueError, match="at rest") as info:
        read_lhe(write_lhe(tmp_path / "cm.lhe", target_p3=(0.0, 0.0, -1.0)))
    assert "cm.lhe" in str(info.value) and "event 1" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found") as info:
        read_lhe(tmp_path / "nope.lhe")
    assert "nope.lhe" in str(info.value)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda text: text[: text.index("</event>") + 20],  # truncated in the second event
        lambda text: text.replace("</init>", ""),  # broken XML
        lambda text: text.replace(" 9.0\n", " 9.0x\n", 1),  # non-numeric value in a particle line
        lambda text: text.replace("<LesHouchesEvents", "<SomethingElse").replace("</LesHouchesEvents", "</SomethingElse"),
        lambda text: "",
    ],
    ids=["truncated", "bad-xml", "non-numeric", "wrong-root", "empty"],
)
def test_malformed_lhe(tmp_path, corrupt):
    good = write_lhe(tmp_path / "good.lhe")
    bad = tmp_path / "bad.lhe"
    bad.write_text(corrupt(good.read_text()))
    with pytest.raises(ValueError) as info:
        read_lhe(bad)
    assert str(bad) in str(info.value)


@pytest.mark.skipif(False, reason="runs with or without pylhe")
def test_missing_pylhe(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pylhe", None)  # makes `import pylhe` raise ImportError
    with pytest.raises(ImportError, match=r"pip install muone-toolkit\[lhe\]"):
        read_lhe(write_lhe(tmp_path / "events.lhe"))
