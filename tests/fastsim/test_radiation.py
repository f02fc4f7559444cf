"""Tests of the QED radiation model (fastsim.generator.radiation).

Accuracy claimed in docs/radiation.md and tested here: integrated cross sections with an
electron-energy cut (0.2-1 GeV, 150-160 GeV beams) within 3 % of MESMER NLO (2 % for the
leading-log part alone at the fit point), fractions of the cross section in the radiative tail
within 20 % (relative), plus Monte Carlo errors at 3-4 sigma. K is fitted at 150 GeV, so the
150 GeV test checks the fit and the LL part, the 160 GeV MESMER sample is the independent check.
"""

import lzma
import math
from pathlib import Path

import numpy as np
import pytest

from fastsim.generator.elastic import born_final_state_kernel
from fastsim.generator.radiation import (
    DEFAULT_K_FACTOR,
    N_RADIATION_OUT,
    N_RADIATION_UNIFORMS,
    RadiationModel,
    cross_section_ub,
    generate_events,
    min_born_energy_fraction,
    polar_angle,
    radiate_event,
)
from fastsim.physics.kinematics import ElasticKinematics, angles_from_t_kernel
from fastsim.physics.vacuum_polarization import RunningCoupling
from fastsim.units import ALPHA0, ELECTRON_MASS_GEV, MUON_MASS_GEV

ME, MMU = ELECTRON_MASS_GEV, MUON_MASS_GEV
MESMER_FILE = Path("/work/shared/data/mesmer/mesmer_nlo_160gev_eemin1_3k.dat.xz")
CLAIMED_SIGMA_ACCURACY = 0.03
CLAIMED_LL_ACCURACY_AT_FIT = 0.02
CLAIMED_TAIL_ACCURACY = 0.20


def _random_events(beam_energy, n, seed, model):
    """(t, phi, uniforms, out, factor) for t log-uniform over the whole kinematic range."""
    rng = np.random.default_rng(seed)
    kin = ElasticKinematics(beam_energy)
    t = -np.exp(rng.uniform(math.log(2 * ME * 1e-3), math.log(-kin.t_min_gev2), n))
    phi = rng.uniform(0, 2 * math.pi, n)
    uniforms = rng.random((n, N_RADIATION_UNIFORMS))
    out = np.empty((n, N_RADIATION_OUT))
    factor = np.empty(n)
    params = model.kernel_params()
    for i in range(n):
        factor[i] = radiate_event(beam_energy, t[i], phi[i], uniforms[i], params, out[i])
    return t, phi, uniforms, out, factor


# --- configuration ----------------------------------------------------------------------------


def test_interface_constants():
    assert N_RADIATION_UNIFORMS == 4
    assert N_RADIATION_OUT == 12
    params = RadiationModel(name="nlo").kernel_params()
    assert params.dtype == np.float64 and params.ndim == 1
    assert RadiationModel().name == "none" and RadiationModel().photon_energy_min_gev == 2e-6
    assert RadiationModel(name="nlo").k_factor == DEFAULT_K_FACTOR


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "nnlo"}, ["name", "'nnlo'", "none", "nlo"]),
        ({"name": "nlo", "photon_energy_min_gev": -1.0}, ["photon_energy_min_gev", "-1.0", "(0.0, 1.0]"]),
        ({"name": "nlo", "photon_energy_min_gev": 0.0}, ["photon_energy_min_gev", "0.0"]),
        ({"name": "nlo", "photon_energy_min_gev": "2e-6"}, ["photon_energy_min_gev", "'2e-6'"]),
        ({"name": "nlo", "k_factor": 3.0}, ["k_factor", "3.0", "[0.5, 2.0]"]),
        ({"name": "nlo", "k_factor": float("nan")}, ["k_factor", "nan"]),
    ],
)
def test_bad_configuration_names_key_value_and_range(kwargs, words):
    with pytest.raises(ValueError) as error:
        RadiationModel(**kwargs)
    for word in words:
        assert word in str(error.value)


def test_helper_rejects_bad_window():
    with pytest.raises(ValueError, match="born_kinetic_min_gev"):
        generate_events(RadiationModel(), 150.0, 10, born_kinetic_min_gev=-1.0)


# --- kinematics -------------------------------------------------------------------------------


def test_none_gives_weight_one_and_born_kinematics_exactly():
    t, phi, uniforms, out, factor = _random_events(150.0, 2000, 1, RadiationModel(name="none"))
    assert np.all(factor == 1.0)
    for i in range(t.size):
        born = np.array(born_final_state_kernel(150.0, t[i], math.cos(phi[i]), math.sin(phi[i])))
        assert np.array_equal(out[i, :8], born)
        assert np.all(out[i, 8:] == 0.0)
        theta_e, theta_mu = angles_from_t_kernel(150.0, t[i])
        assert polar_angle(out[i : i + 1, 4:8])[0] == pytest.approx(theta_e, rel=1e-12)
        assert polar_angle(out[i : i + 1, 0:4])[0] == pytest.approx(theta_mu, rel=1e-9)


@pytest.mark.parametrize("beam_energy", [150.0, 160.0, 10.0])
def test_energy_momentum_conservation_and_masses(beam_energy):
    t, phi, uniforms, out, factor = _random_events(beam_energy, 20000, 2, RadiationModel(name="nlo"))
    p_beam = math.sqrt(beam_energy**2 - MMU**2)
    initial = np.array([0.0, 0.0, p_beam, beam_energy + ME])
    total = out[:, 0:4] + out[:, 4:8] + out[:, 8:12]
    assert np.max(np.abs(total - initial)) / (beam_energy + ME) < 1e-9
    emitted = out[:, 11] > 0
    assert 0.1 < emitted.mean() < 0.9  # photons are emitted, not always
    for sl, mass in ((slice(0, 4), MMU), (slice(4, 8), ME), (slice(8, 12), 0.0)):
        p = out[:, sl]
        m2 = (p[:, 3] - np.linalg.norm(p[:, :3], axis=1)) * (p[:, 3] + np.linalg.norm(p[:, :3], axis=1))
        # on shell up to float64 rounding: the electron is X - photon, so its E^2 - p^2 carries
        # rounding errors of order eps E_e E_beam (observed: < 1e-15 E E_beam)
        assert np.all(np.abs(m2 - mass**2) <= 1e-14 * p[:, 3] * beam_energy)
    assert np.all(factor >= 0.0) and np.all(np.isfinite(factor))
    assert np.all(out[emitted, 11] >= 2e-6)


def test_kernel_is_pure_function_of_its_inputs():
    params = RadiationModel(name="nlo").kernel_params()
    uniforms = np.array([0.2, 0.3, 0.4, 0.5])
    first, second = np.empty(12), np.full(12, 7.0)
    w1 = radiate_event(160.0, -0.01, 1.0, uniforms, params, first)
    w2 = radiate_event(160.0, -0.01, 1.0, uniforms, params, second)
    assert w1 == w2 and np.array_equal(first, second)


def test_k_factor_scales_weight_only():
    uniforms = np.array([0.7, 0.01, 0.4, 0.5])
    out1, out2 = np.empty(12), np.empty(12)
    w1 = radiate_event(160.0, -0.01, 1.0, uniforms, RadiationModel(name="nlo", k_factor=1.0).kernel_params(), out1)
    w2 = radiate_event(160.0, -0.01, 1.0, uniforms, RadiationModel(name="nlo", k_factor=1.5).kernel_params(), out2)
    assert w2 == pytest.approx(1.5 * w1, rel=1e-14) and np.array_equal(out1, out2)


def _photon_energies(n, q2, leg_uniform=None, seed=3):
    rng = np.random.default_rng(seed)
    uniforms = rng.random((n, N_RADIATION_UNIFORMS))
    if leg_uniform is not None:
        uniforms[:, 0] = leg_uniform
    params = RadiationModel(name="nlo", k_factor=1.0, photon_energy_min_gev=1e-9).kernel_params()
    out = np.empty(12)
    k, w = np.empty(n), np.empty(n)
    for i in range(n):
        w[i] = radiate_event(160.0, -q2, 0.0, uniforms[i], params, out)
        k[i] = out[11]
    return k, w


def _per_decade(k, w, edges):
    sums = np.histogram(k, edges, weights=w)[0] / w.sum()
    return sums, np.sqrt(np.histogram(k, edges, weights=w**2)[0]) / w.sum()


def test_soft_photon_spectrum_is_one_over_k():
    """Soft photons: dN/dk = beta (k/E)^beta / k, i.e. 1/k up to the exponentiation factor.

    From the final-state leg (photon energy v E_X, E_X = m_e - t/(2 m_e)) the fraction per
    decade is exactly (k_hi/E_X)^beta - (k_lo/E_X)^beta with beta = (2 alpha/pi)(ln(Q^2/m^2) - 1),
    the exponent of the sampled structure function, i.e. the eikonal coefficient of the electron
    line. The full model follows the same 1/k shape within 20 % of that level (observed +11 %):
    the target-side photons' lab energies are spread by their light-cone assignment.
    """
    q2 = 0.01
    beta = 2 * ALPHA0 / math.pi * (math.log(q2 / ME**2) - 1)
    energy_x = ME + q2 / (2 * ME)
    edges = np.array([1e-7, 1e-6, 1e-5, 1e-4])
    expected = (edges[1:] / energy_x) ** beta - (edges[:-1] / energy_x) ** beta
    k, w = _photon_energies(200_000, q2, leg_uniform=0.75)
    per_decade, errors = _per_decade(k, w, edges)
    assert np.all(np.abs(per_decade - expected) < 5 * errors + 0.02 * expected)

    k, w = _photon_energies(400_000, q2)
    per_decade, errors = _per_decade(k, w, edges)
    level = per_decade / expected
    assert np.all(np.abs(level - level.mean()) < 5 * errors / expected + 0.1 * level.mean())  # 1/k shape
    assert 0.8 < level.mean() < 1.2
    # nothing below the default cut-off
    k, _ = _photon_energies(20_000, q2, seed=4)
    assert np.all((k == 0) | (k >= 1e-9))
    out = np.empty(12)
    params = RadiationModel(name="nlo").kernel_params()
    rng = np.random.default_rng(5)
    for u in rng.random((20_000, N_RADIATION_UNIFORMS)):
        radiate_event(160.0, -q2, 0.0, u, params, out)
        assert out[11] == 0.0 or out[11] >= 2e-6


# --- cross sections against MESMER -----------------------------------------------------------


def _sigma_150(k_factor, n_events, seed):
    model = RadiationModel(name="nlo", k_factor=k_factor)
    events = generate_events(model, 150.0, n_events, seed=seed,
                             born_kinetic_min_gev=0.5 * min_born_energy_fraction(150.0, 0.2) * 0.2,
                             born_kinetic_split_gev=0.2, beam_energy_spread_gev=4.5,
                             running=RunningCoupling("lep"))
    return cross_section_ub(events, events["energy_e"] > 0.2)


def test_150gev_cross_section_against_mesmer_nlo():
    """MESMER NLO 1335.33 +- 0.10 ub vs LO 1276.88 ub (150 GeV, 4.5 GeV spread, E_e > 0.2 GeV).

    K is fitted to this number, so the full model must reproduce it within MC errors (4 sigma);
    the LL part alone (K = 1) must already give the correction within the claimed 2 %."""
    sigma, error = _sigma_150(DEFAULT_K_FACTOR, 1_000_000, 20)
    assert abs(sigma - 1335.33) < 4 * math.hypot(error, 0.10)
    raw, raw_error = _sigma_150(1.0, 1_000_000, 21)
    assert raw / 1276.88 - 1 > 0.02  # the LL physics gives most of the +4.6 %
    assert abs(raw - 1335.33) < CLAIMED_LL_ACCURACY_AT_FIT * 1335.33 + 4 * raw_error


def _read_mesmer(path=MESMER_FILE):
    text = lzma.open(path, "rt").read()
    header, rest = text.split("</header>")
    lines = header.splitlines()
    wnorm = float(lines[[i for i, line in enumerate(lines) if "Normalization cross section" in line][0] + 1])
    masses = {13: MMU, 11: ME, 22: 0.0}
    weights, muon, electron, photon = [], [], [], []
    for record in rest.split("<footer>")[0].split("<event>")[1:]:
        rows = [line.split() for line in record.split("</event>")[0].strip().splitlines()]
        n_out = int(rows[2][0])
        weights.append(float(rows[3][0]))
        event = {13: np.zeros(4), 11: np.zeros(4), 22: np.zeros(4)}
        for row in rows[-n_out:]:
            pid, p = abs(int(row[0])), np.array([float(v) for v in row[1:4]])
            event[pid] = np.append(p, math.sqrt(p @ p + masses[pid] ** 2))
        muon.append(event[13]), electron.append(event[11]), photon.append(event[22])
    weights = np.array(weights) * wnorm / len(weights)
    return weights, np.array(muon), np.array(electron), np.array(photon)


def _tail_fractions(weights, muon, electron, photon):
    kin = ElasticKinematics(160.0)
    theta_e, theta_mu = polar_angle(electron), polar_angle(muon)
    elastic_mu = kin.theta_mu_from_theta_e(np.clip(theta_e, 0.0, 1.5))
    elastic_ee = ME - kin.t_from_theta_e(np.clip(theta_e, 0.0, 1.5)) / (2 * ME)
    masks = [photon[:, 3] > 0.2, np.abs(theta_mu - elastic_mu) > 2e-4, electron[:, 3] < 0.95 * elastic_ee]
    total = weights.sum()
    result = []
    for mask in masks:
        frac = weights[mask].sum() / total
        result.append((frac, math.sqrt(np.sum(weights**2 * (mask - frac) ** 2)) / total))
    return result


@pytest.mark.skipif(not MESMER_FILE.exists(), reason="MESMER sample not available")
def test_160gev_against_mesmer_sample():
    """Independent check: the 3000-event MESMER NLO sample (160 GeV mu+, E_e > 1 GeV, theta < 100
    mrad, lep+had running): cross section at the claimed 3 % and the radiative-tail fractions
    (hard photon > 0.2 GeV, off the elastic curve by > 0.2 mrad, electron 5 % below the elastic
    energy at its angle) at the claimed 20 %, plus 3 sigma of the combined MC errors."""
    weights, muon, electron, photon = _read_mesmer()
    sigma_m = weights.sum()
    error_m = math.sqrt(weights.size) * weights.std()
    assert sigma_m == pytest.approx(253.18, abs=0.01) and error_m == pytest.approx(3.84, abs=0.01)

    events = generate_events(RadiationModel(name="nlo"), 160.0, 600_000, seed=22,
                             born_kinetic_min_gev=0.5 * min_born_energy_fraction(160.0, 1.0),
                             born_kinetic_split_gev=1.0, running=RunningCoupling("lep+had"))
    mask = (events["energy_e"] > 1.0) & (events["theta_e"] < 0.1) & (events["theta_mu"] < 0.1)
    sigma, error = cross_section_ub(events, mask)
    assert abs(sigma - sigma_m) < CLAIMED_SIGMA_ACCURACY * sigma_m + 3 * math.hypot(error, error_m)

    ours = _tail_fractions(np.where(mask, events["weight"], 0.0), events["muon"], events["electron"], events["photon"])
    theirs = _tail_fractions(weights, muon, electron, photon)
    for (f_ours, e_ours), (f_m, e_m) in zip(ours, theirs):
        assert abs(f_ours - f_m) < CLAIMED_TAIL_ACCURACY * f_m + 3 * math.hypot(e_ours, e_m)
