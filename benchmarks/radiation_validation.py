"""Validation of the QED radiation model (fastsim.generator.radiation) against MESMER NLO numbers.

Run from the repository root:

    python benchmarks/radiation_validation.py            # numbers + docs/radiation_validation.png
    python benchmarks/radiation_validation.py --fit      # also refit the K-factor (prints it)

What it does
1. 150 GeV mu- beam with a 4.5 GeV Gaussian spread, E_e > 0.2 GeV, leptonic running: the "nlo"
   model with K = 1 (pure leading-log part) and with the default K, against MESMER's published
   NLO 1335.33 +- 0.10 ub and the exact LO 1276.88 ub. This is the number K is fitted to.
2. 160 GeV, E_e > 1 GeV, theta_e and theta_mu < 100 mrad, leptonic + hadronic running: against
   the MESMER NLO sample in /work/shared/data/mesmer (253.18 +- 3.84 ub, 3000 weighted events,
   mu+ beam), parsed here directly: cross section, fractions of the cross section in the
   radiative tail, and the theta_e spectrum (the independent check).
3. The plot: theta_mu vs theta_e of the "nlo" model with the elastic curve, and dsigma/dtheta_e
   LO vs NLO with the MESMER sample on the ratio panel.
4. Throughput of `radiate_event` (single thread).
"""

from __future__ import annotations

import argparse
import lzma
import math
import time
from pathlib import Path

import numpy as np

from fastsim.generator.radiation import (
    N_RADIATION_OUT,
    N_RADIATION_UNIFORMS,
    RadiationModel,
    cross_section_ub,
    generate_events,
    min_born_energy_fraction,
    polar_angle,
    radiate_event,
)
from fastsim.physics.cross_section import ElasticCrossSection, ElasticCuts
from fastsim.physics.kinematics import ElasticKinematics
from fastsim.physics.vacuum_polarization import RunningCoupling
from fastsim.units import ELECTRON_MASS_GEV, MUON_MASS_GEV

ROOT = Path(__file__).resolve().parents[1]
MESMER_FILE = Path("/work/shared/data/mesmer/mesmer_nlo_160gev_eemin1_3k.dat.xz")
MESMER_150_NLO_UB, MESMER_150_NLO_ERR_UB, LO_150_UB = 1335.33, 0.10, 1276.88
MESMER_160_NLO_UB, MESMER_160_NLO_ERR_UB = 253.18, 3.84


def read_mesmer_ascii(path=MESMER_FILE):
    """(weights in ub per event summing to sigma, muon, electron, photon (N, 4)) from MESMER's
    plain storage format (storemode 0): weight of an event = first weight * wnorm / N."""
    text = lzma.open(path, "rt").read()
    header, rest = text.split("</header>")
    lines = header.splitlines()
    wnorm = float(lines[[i for i, line in enumerate(lines) if "Normalization cross section" in line][0] + 1])
    masses = {13: MUON_MASS_GEV, 11: ELECTRON_MASS_GEV, 22: 0.0}
    weights, momenta = [], []
    for record in rest.split("<footer>")[0].split("<event>")[1:]:
        rows = [line.split() for line in record.split("</event>")[0].strip().splitlines()]
        n_out = int(rows[2][0])
        weights.append(float(rows[3][0]))
        event = {13: np.zeros(4), 11: np.zeros(4), 22: np.zeros(4)}
        for row in rows[-n_out:]:
            pid, p = abs(int(row[0])), np.array([float(v) for v in row[1:4]])
            event[pid] = np.append(p, math.sqrt(p @ p + masses[pid] ** 2))
        momenta.append((event[13], event[11], event[22]))
    weights = np.array(weights)
    muon, electron, photon = (np.array([m[k] for m in momenta]) for k in range(3))
    return weights * wnorm / weights.size, muon, electron, photon


def mesmer_nlo_over_lo(path=MESMER_FILE):
    """NLO/LO of the MESMER sample from its own w_LO column (fifth record line): sum w / sum w_LO,
    with the error of a ratio of correlated weighted sums."""
    text = lzma.open(path, "rt").read().split("</header>")[1].split("<footer>")[0]
    w, w_lo = [], []
    for record in text.split("<event>")[1:]:
        rows = [line.split() for line in record.strip().splitlines()]
        w.append(float(rows[3][0]))
        w_lo.append(float(rows[4][0]))
    w, w_lo = np.array(w), np.array(w_lo)
    ratio = w.sum() / w_lo.sum()
    return ratio, math.sqrt(np.sum((w - ratio * w_lo) ** 2)) / w_lo.sum()


def tail_fractions(weights, muon, electron, photon, beam_energy_gev):
    """Fractions of the cross section: photon > 0, > 0.2 GeV, > 1 GeV; |theta_mu - elastic| > 0.2
    mrad; E_e < 0.95 E_e,elastic(theta_e)."""
    kin = ElasticKinematics(beam_energy_gev)
    theta_e, theta_mu = polar_angle(electron), polar_angle(muon)
    elastic_mu = kin.theta_mu_from_theta_e(np.clip(theta_e, 0.0, 1.5))
    elastic_ee = ELECTRON_MASS_GEV - kin.t_from_theta_e(np.clip(theta_e, 0.0, 1.5)) / (2 * ELECTRON_MASS_GEV)
    total = weights.sum()
    selections = {
        "photon > 0": photon[:, 3] > 0,
        "photon > 0.2 GeV": photon[:, 3] > 0.2,
        "photon > 1 GeV": photon[:, 3] > 1.0,
        "|dtheta_mu| > 0.2 mrad": np.abs(theta_mu - elastic_mu) > 2e-4,
        "E_e < 0.95 E_el(theta_e)": electron[:, 3] < 0.95 * elastic_ee,
    }
    result = {}
    for name, mask in selections.items():
        frac = weights[mask].sum() / total
        # Error of a ratio of weighted sums (binomial-like, from the weights).
        err = math.sqrt(np.sum(weights**2 * (mask - frac) ** 2)) / total
        result[name] = (frac, err)
    return result


def run_150(n_events, k_factor, seed=150):
    model = RadiationModel(name="nlo", k_factor=k_factor)
    low = 0.5 * min_born_energy_fraction(150.0, 0.2) * 0.2
    events = generate_events(model, 150.0, n_events, seed=seed, born_kinetic_min_gev=low,
                             born_kinetic_split_gev=0.2, beam_energy_spread_gev=4.5, running=RunningCoupling("lep"))
    return cross_section_ub(events, events["energy_e"] > 0.2)


def events_160(model, n_events, seed=160):
    low = 0.5 * min_born_energy_fraction(160.0, 1.0) * 1.0
    events = generate_events(model, 160.0, n_events, seed=seed, born_kinetic_min_gev=low,
                             born_kinetic_split_gev=1.0, running=RunningCoupling("lep+had"))
    mask = (events["energy_e"] > 1.0) & (events["theta_e"] < 0.1) & (events["theta_mu"] < 0.1)
    return events, mask


def throughput(n_events=1_000_000):
    params = RadiationModel(name="nlo").kernel_params()
    rng = np.random.default_rng(1)
    t = -np.exp(rng.uniform(math.log(2e-4), math.log(0.1), n_events))
    uniforms = rng.random((n_events, N_RADIATION_UNIFORMS))
    out = np.empty(N_RADIATION_OUT)
    from numba import njit

    @njit
    def loop(t, uniforms, params, out):
        total = 0.0
        for i in range(t.size):
            total += radiate_event(160.0, t[i], 0.3, uniforms[i], params, out)
        return total

    loop(t[:10], uniforms[:10], params, out)
    start = time.perf_counter()
    loop(t, uniforms, params, out)
    return n_events / (time.perf_counter() - start)


def make_plot(events_nlo, mask_nlo, events_lo, mask_lo, mesmer, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    kin = ElasticKinematics(160.0)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    ax = axes[0]
    w = np.where(mask_nlo, events_nlo["weight"], 0.0)
    h = ax.hist2d(events_nlo["theta_e"] * 1e3, events_nlo["theta_mu"] * 1e3,
                  bins=[np.linspace(0, 32, 161), np.linspace(0, 5, 126)],
                  weights=w / w.size, norm=LogNorm(), cmap="viridis")
    fig.colorbar(h[3], ax=ax, label="ub per bin")
    theta_e = np.linspace(1e-4, 0.032, 400)
    ax.plot(theta_e * 1e3, kin.theta_mu_from_theta_e(theta_e) * 1e3, "r-", lw=0.8, label="elastic curve")
    mw, mmu, mel, _ = mesmer
    ax.scatter(polar_angle(mel) * 1e3, polar_angle(mmu) * 1e3, s=3, c="w", edgecolors="k", linewidths=0.3,
               label="MESMER NLO sample (3000 ev.)")
    ax.set_xlabel(r"$\theta_e$ [mrad]")
    ax.set_ylabel(r"$\theta_\mu$ [mrad]")
    ax.set_title(r"'nlo' model, 160 GeV $\mu$, $E_e > 1$ GeV")
    ax.legend(loc="upper right", fontsize=8)

    bins = np.linspace(0, 32, 17)
    width = bins[1] - bins[0]
    centers = 0.5 * (bins[1:] + bins[:-1])

    def spectrum(theta, weights, n):
        sums, _ = np.histogram(theta * 1e3, bins, weights=weights)
        sums2, _ = np.histogram(theta * 1e3, bins, weights=weights**2)
        return sums / n / width, np.sqrt(sums2) / n / width

    lo, lo_err = spectrum(events_lo["theta_e"], np.where(mask_lo, events_lo["weight"], 0.0), events_lo["weight"].size)
    nlo, nlo_err = spectrum(events_nlo["theta_e"], w, w.size)
    ms, ms_err = spectrum(polar_angle(mel), mw, 1)

    ax = axes[1]
    ax.step(centers, lo, where="mid", label="LO (running alpha)")
    ax.step(centers, nlo, where="mid", label="'nlo' model")
    ax.errorbar(centers, ms, yerr=ms_err, fmt="ks", ms=3, label="MESMER NLO sample")
    ax.set_yscale("log")
    ax.set_xlabel(r"$\theta_e$ [mrad]")
    ax.set_ylabel(r"$d\sigma/d\theta_e$ [ub/mrad]")
    ax.set_title(r"$\theta_e$ spectrum, $E_e > 1$ GeV, $\theta_{e,\mu} < 100$ mrad")
    ax.legend(fontsize=8)

    ax = axes[2]
    ok = lo > 0
    ax.errorbar(centers[ok], nlo[ok] / lo[ok], yerr=np.hypot(nlo_err / lo, nlo * lo_err / lo**2)[ok], fmt="o-", ms=3,
                label="'nlo' model / LO")
    ax.errorbar(centers[ok], ms[ok] / lo[ok], yerr=(ms_err / lo)[ok], fmt="ks", ms=3, label="MESMER NLO sample / LO")
    ax.axhline(1.0, color="gray", lw=0.5)
    ax.set_xlim(4, 32)
    ax.set_ylim(0.7, 1.8)
    ax.set_xlabel(r"$\theta_e$ [mrad]")
    ax.set_ylabel("ratio to LO")
    ax.set_title(r"NLO / LO (below 4 mrad: 2-5, where LO ends)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fit", action="store_true", help="refit the K-factor at 150 GeV (8e6 events)")
    parser.add_argument("--events", type=int, default=4_000_000, help="events per sample")
    args = parser.parse_args()

    default_k = RadiationModel(name="nlo").k_factor
    print("== 150 GeV, 4.5 GeV spread, E_e > 0.2 GeV, leptonic running (MESMER: mu-) ==")
    exact_lo = ElasticCrossSection(150.0, RunningCoupling("lep")).sigma_ub(ElasticCuts(ee_min_gev=0.2))
    print(f"LO exact (no spread)          : {exact_lo:.3f} ub   (REFERENCE 1276.877)")
    n_fit = 8_000_000 if args.fit else args.events
    raw, raw_err = run_150(n_fit, 1.0)
    print(f"nlo model, K = 1 (LL only)    : {raw:.2f} +- {raw_err:.2f} ub  ratio to LO {raw / LO_150_UB:.4f} +- {raw_err / LO_150_UB:.4f}")
    if args.fit:
        k_fit = MESMER_150_NLO_UB / raw
        k_err = k_fit * math.hypot(raw_err / raw, MESMER_150_NLO_ERR_UB / MESMER_150_NLO_UB)
        print(f"fitted K = {k_fit:.5f} +- {k_err:.5f}")
    sig, err = run_150(args.events, default_k, seed=151)
    print(f"nlo model, K = {default_k:.4f}     : {sig:.2f} +- {err:.2f} ub  (MESMER {MESMER_150_NLO_UB} +- {MESMER_150_NLO_ERR_UB})"
          f"  NLO/LO {sig / LO_150_UB:.4f} vs {MESMER_150_NLO_UB / LO_150_UB:.4f}")

    print("\n== 160 GeV, E_e > 1 GeV, theta_e, theta_mu < 100 mrad, lep+had running (MESMER sample: mu+) ==")
    mesmer = read_mesmer_ascii()
    mw = mesmer[0]
    print(f"MESMER sample: {mw.sum():.2f} +- {math.sqrt(np.sum(mw**2) - mw.sum()**2 / mw.size):.2f} ub from {mw.size} weights")
    lo_exact = ElasticCrossSection(160.0, RunningCoupling("lep+had")).sigma_ub(
        ElasticCuts(ee_min_gev=1.0, theta_e_max_rad=0.1, theta_mu_max_rad=0.1))
    print(f"LO exact                      : {lo_exact:.3f} ub;  MESMER NLO/LO = {MESMER_160_NLO_UB / lo_exact:.4f} +- {MESMER_160_NLO_ERR_UB / lo_exact:.4f}")
    ratio_m, ratio_m_err = mesmer_nlo_over_lo()
    print(f"MESMER NLO/LO from its own w_LO column (same events): {ratio_m:.4f} +- {ratio_m_err:.4f}")
    ev_nlo, mask_nlo = events_160(RadiationModel(name="nlo"), args.events)
    ev_lo, mask_lo = events_160(RadiationModel(name="none"), args.events)
    sig, err = cross_section_ub(ev_nlo, mask_nlo)
    pull = (sig - MESMER_160_NLO_UB) / math.hypot(err, MESMER_160_NLO_ERR_UB)
    print(f"nlo model                     : {sig:.2f} +- {err:.2f} ub  NLO/LO {sig / lo_exact:.4f};  "
          f"difference to MESMER {100 * (sig / MESMER_160_NLO_UB - 1):+.2f} % ({pull:+.2f} sigma)")
    ours = tail_fractions(np.where(mask_nlo, ev_nlo["weight"], 0.0), ev_nlo["muon"], ev_nlo["electron"], ev_nlo["photon"], 160.0)
    theirs = tail_fractions(*mesmer, 160.0)
    print(f"{'fraction of sigma':28s} {'nlo model':>18s} {'MESMER sample':>18s}")
    for name in ours:
        print(f"{name:28s} {ours[name][0]:9.4f} +- {ours[name][1]:.4f} {theirs[name][0]:9.4f} +- {theirs[name][1]:.4f}")

    print("\nratio to LO in bins (the MESMER sample's error is its MC error)")
    w_nlo = np.where(mask_nlo, ev_nlo["weight"], 0.0)
    w_lo = np.where(mask_lo, ev_lo["weight"], 0.0)
    for label, ours_x, lo_x, mesmer_x, bins in [
        ("theta_e [mrad]", ev_nlo["theta_e"] * 1e3, ev_lo["theta_e"] * 1e3, polar_angle(mesmer[2]) * 1e3,
         [0, 2, 5, 10, 15, 20, 25, 32]),
        ("E_e [GeV]", ev_nlo["energy_e"], ev_lo["energy_e"], mesmer[2][:, 3], [1, 1.5, 2, 3, 5, 10, 30, 160]),
    ]:
        lo_sum = np.histogram(lo_x, bins, weights=w_lo)[0] / w_lo.size
        ours_sum = np.histogram(ours_x, bins, weights=w_nlo)[0] / w_nlo.size
        m_sum = np.histogram(mesmer_x, bins, weights=mw)[0]
        m_err = np.sqrt(np.histogram(mesmer_x, bins, weights=mw**2)[0])
        for i in range(len(bins) - 1):
            print(f"  {label} [{bins[i]}, {bins[i + 1]}): LO {lo_sum[i]:7.2f} ub  nlo/LO {ours_sum[i] / lo_sum[i]:.3f}  "
                  f"MESMER/LO {m_sum[i] / lo_sum[i]:.3f} +- {m_err[i] / lo_sum[i]:.3f}")

    path = ROOT / "docs" / "radiation_validation.png"
    path.parent.mkdir(exist_ok=True)
    make_plot(ev_nlo, mask_nlo, ev_lo, mask_lo, mesmer, path)
    print(f"\nplot written to {path.relative_to(ROOT)}")
    print(f"radiate_event throughput (one thread): {throughput():.3g} events/s")


if __name__ == "__main__":
    main()
