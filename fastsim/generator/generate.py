"""Event generation: configuration, the per-chunk kernels and the chunked driver.

What to use when:

- `GeneratorConfig` (from TOML with `GeneratorConfig.from_toml`, or built in Python) says what
  to generate: beam, targets, processes, running, radiation, generation cuts, weighted or not.
- `Generator(config, seed)` produces events: `generator.chunk(first_event, n)` gives the
  TruthEvents of events [first_event, first_event + n), the same whatever the chunking, and
  `generator.run(n_events, chunk_size)` iterates over chunks (unweighted mode: over accepted
  events). `generator.summary()` gives the MC cross section with its error.
- `write_events(generator, n_events, path)` writes a Parquet file atomically.

Weights are in ub per target electron: with several targets or processes, sum(weight)/N times the
electron areal density times the number of beam muons is the expected number of events.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from numba import njit, prange

import fastsim
from fastsim import rng
from fastsim.config import check_choice, check_integer, check_range, content_hash, from_mapping, load_toml, to_plain
from fastsim.events import PARTICLE_COLUMNS, PROCESS_CODES, TruthEvents, TruthWriter
from fastsim.generator.beam import BeamModel, beam_kernel, rotate_to_beam, store_beam_and_vertex
from fastsim.generator.elastic import (
    RunningTable,
    TSampling,
    born_final_state_kernel,
    cut_array,
    elastic_weight_kernel,
    passes_cuts_kernel,
    sample_t_kernel,
    sampling_intervals,
)
from fastsim.generator.pair import PairProcess, PairSettings, pair_chunk
from fastsim.generator.radiation import RADIATION_MODELS, RadiationModel, min_born_energy_fraction, radiate_event
from fastsim.generator.targets import Target, check_targets, target_arrays, vertex_kernel
from fastsim.numerics import polar_angle, sincos_turn, tan_small
from fastsim.physics.cross_section import ElasticCrossSection, ElasticCuts
from fastsim.physics.kinematics import angles_from_t_kernel, born_momenta_kernel
from fastsim.physics.vacuum_polarization import (
    RUNNING_CHOICES,
    LeptonLikeModel,
    NoHadronicModel,
    Pol2Model,
    RunningCoupling,
    TabulatedModel,
)
from fastsim.units import ELECTRON_MASS_GEV, PDG_ELECTRON, PDG_MUON, PDG_PHOTON

PROCESS_CHOICES = ("elastic", "pair", "all")
#: Events per chunk. 1e5 keeps a chunk's arrays (~30 MB) near the caches: measured 3x the
#: throughput of 1e6-event chunks on the development machine, at a tenth of the memory.
DEFAULT_CHUNK_SIZE = 100_000
N_OUT = 3  # outgoing particle slots per event: muon, electron, photon (or e+ for pairs)


@dataclass(frozen=True)
class ElasticSettings:
    """Elastic process: running of alpha, hadronic model, radiation and generation cuts."""

    running: str = "lep+had"
    hadronic_model: str = "ll"
    K: float = 0.13724
    M_gev2: float = 0.0525
    c1_per_gev2: float = -0.009057
    c2_per_gev4: float = -0.01364
    hadronic_table: str | None = None
    radiation: str = "none"
    photon_energy_min_gev: float = 2e-6
    radiation_k_factor: float | None = None
    ee_min_gev: float | None = 1.0
    ee_max_gev: float | None = None
    theta_e_min_rad: float | None = None
    theta_e_max_rad: float | None = None
    theta_mu_min_rad: float | None = None
    theta_mu_max_rad: float | None = None

    def __post_init__(self):
        check_choice("running", self.running, RUNNING_CHOICES)
        check_choice("hadronic_model", self.hadronic_model, ("ll", "pol2", "table", "none"))
        check_choice("radiation", self.radiation, RADIATION_MODELS)
        if self.hadronic_model == "table" and self.hadronic_table is None:
            raise ValueError("hadronic_table: a file is required with hadronic_model = 'table'")
        if self.radiation != "none" and self.ee_min_gev is None:
            raise ValueError(f"ee_min_gev: radiation = {self.radiation!r} needs a cut on the electron energy")
        self.cuts  # validates the cut window
        self.running_coupling  # validates the model parameters
        self.radiation_model  # validates the radiation settings

    @property
    def radiation_model(self) -> RadiationModel:
        extra = {} if self.radiation_k_factor is None else {"k_factor": self.radiation_k_factor}
        try:
            return RadiationModel(name=self.radiation, photon_energy_min_gev=self.photon_energy_min_gev, **extra)
        except ValueError as error:  # name the keys as this table spells them
            raise ValueError(str(error).replace("k_factor", "radiation_k_factor", 1)) from None

    @property
    def cuts(self) -> ElasticCuts:
        return ElasticCuts(self.ee_min_gev, self.ee_max_gev, self.theta_e_min_rad, self.theta_e_max_rad,
                           self.theta_mu_min_rad, self.theta_mu_max_rad)

    @cached_property  # a table model reads its file once
    def running_coupling(self) -> RunningCoupling:
        model = {
            "ll": lambda: LeptonLikeModel(self.K, self.M_gev2),
            "pol2": lambda: Pol2Model(self.c1_per_gev2, self.c2_per_gev4),
            "table": lambda: TabulatedModel.from_file(self.hadronic_table),
            "none": NoHadronicModel,
        }[self.hadronic_model]()
        return RunningCoupling(self.running, model)


@dataclass(frozen=True)
class GeneratorConfig:
    """What to generate. TOML layout: [beam], [[targets]], [elastic], [pair] and the top-level
    keys `process` ("elastic", "pair", or "all": both, mixed in proportion to their cross
    sections) and `unweighted`."""

    beam: BeamModel = field(default_factory=BeamModel)
    targets: tuple = (Target(),)
    elastic: ElasticSettings = field(default_factory=ElasticSettings)
    pair: PairSettings = field(default_factory=PairSettings)
    process: str = "elastic"
    unweighted: bool = False

    def __post_init__(self):
        check_choice("process", self.process, PROCESS_CHOICES)
        object.__setattr__(self, "targets", check_targets(self.targets))

    @classmethod
    def from_dict(cls, data: dict, where: str = "config") -> "GeneratorConfig":
        data = dict(data)
        unknown = sorted(set(data) - {"beam", "targets", "elastic", "pair", "process", "unweighted"})
        if unknown:
            raise ValueError(f"unknown key {where}.{unknown[0]}; allowed: beam, targets, elastic, pair, process, unweighted")
        values = {}
        if "beam" in data:
            values["beam"] = from_mapping(BeamModel, data["beam"], f"{where}.beam")
        if "targets" in data:
            if not isinstance(data["targets"], list):
                raise ValueError(f"{where}.targets must be an array of tables ([[targets]])")
            values["targets"] = tuple(from_mapping(Target, t, f"{where}.targets[{i}]") for i, t in enumerate(data["targets"]))
        if "elastic" in data:
            values["elastic"] = from_mapping(ElasticSettings, data["elastic"], f"{where}.elastic")
        if "pair" in data:
            values["pair"] = from_mapping(PairSettings, data["pair"], f"{where}.pair")
        for key, kind in (("process", str), ("unweighted", bool)):
            if key in data:
                if not isinstance(data[key], kind):
                    raise ValueError(f"{where}.{key} = {data[key]!r} has the wrong type; expected {kind.__name__}")
                values[key] = data[key]
        try:
            return cls(**values)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None

    @classmethod
    def from_toml(cls, path) -> "GeneratorConfig":
        return cls.from_dict(load_toml(path), where=str(path))


# Inlined into the parallel loops that call it (numba inlining): there the arrays are known not to
# alias each other; called as a function, every store could change the parameters and LLVM reloads
# them (measured 15 ns an event slower).
@njit(cache=True, nogil=True, inline="always")
def elastic_event_kernel(seed, first_event, i, full_state, weight_scale, beam_params, beam_profile, target_z,
                         target_thickness, target_cumulative, t_shape, t_cumulative, t_start, t_jacobian, running_shift,
                         running_first, running_table, cuts, radiation_params, weight, t_out, beam_out, vertex_out,
                         target_out, momenta, angles):
    """Elastic event first_event + i into row i of the arrays; momenta[i] holds (px, py, pz, E) of
    the muon, the electron and the photon (zero if none), in the lab, angles[i] (theta_e, phi_e,
    theta_mu, phi_mu) in the beam frame. Uniforms 0-2 of STREAM_ELASTIC give t, the azimuth and the
    vertex (uniform 3 is the unweighting's). The arguments after `full_state` are
    `Generator.elastic_kernel_args()` and the output arrays. Without `full_state` only weight, t
    and angles are certain to be written (a histogram of the angles needs no more; the Born
    momenta, the beam and the vertex rows are then skipped, 45 ns of ~240 in the parametric chain)."""
    radiative = radiation_params[0] != 0.0
    event = first_event + i
    u = rng.uniform4(seed, event, rng.STREAM_ELASTIC, 0)
    energy, x0, y0, theta_x, theta_y = beam_kernel(seed, event, beam_params, beam_profile)
    z, target = vertex_kernel(u[2], target_z, target_thickness, target_cumulative)
    t, jacobian = sample_t_kernel(u[0], t_shape, t_cumulative, t_start, t_jacobian)
    phi = 2.0 * math.pi * u[1]
    w = weight_scale * elastic_weight_kernel(energy, t, jacobian, running_shift, running_first, running_table)
    if radiative:
        scratch = np.zeros(N_OUT * 4)
        if w > 0.0:
            r = rng.uniform4(seed, event, rng.STREAM_RADIATION, 0)
            w *= radiate_event(energy, t, phi, np.array(r), radiation_params, scratch)
        for k in range(N_OUT * 4):
            momenta[i, k] = scratch[k]
        energy_e = scratch[7]
        theta_e = polar_angle(math.sqrt(momenta[i, 4] ** 2 + momenta[i, 5] ** 2), momenta[i, 6])
        theta_mu = polar_angle(math.sqrt(momenta[i, 0] ** 2 + momenta[i, 1] ** 2), momenta[i, 2])
        # a photon takes transverse momentum: the azimuths are no longer phi, phi + pi
        phi_e = math.atan2(momenta[i, 5], momenta[i, 4])
        phi_mu = math.atan2(momenta[i, 1], momenta[i, 0])
    else:
        energy_e = born_momenta_kernel(energy, t)[2]
        if full_state:
            cos_phi, sin_phi = sincos_turn(u[1])
            p = born_final_state_kernel(energy, t, cos_phi, sin_phi)
            for k in range(8):
                momenta[i, k] = p[k]
            for k in range(8, N_OUT * 4):
                momenta[i, k] = 0.0
        theta_e, theta_mu = angles_from_t_kernel(energy, t)  # exact, from the same transverse momentum
        phi_e = phi
        phi_mu = phi + math.pi if phi < math.pi else phi - math.pi
    if w > 0.0 and not passes_cuts_kernel(cuts, energy_e, theta_e, theta_mu):
        w = 0.0
    if full_state and (theta_x != 0.0 or theta_y != 0.0):
        tx, ty = tan_small(theta_x), tan_small(theta_y)
        norm = math.sqrt(1.0 + tx * tx + ty * ty)
        for k in range(N_OUT):
            px, py, pz = rotate_to_beam(momenta[i, 4 * k], momenta[i, 4 * k + 1], momenta[i, 4 * k + 2],
                                         tx / norm, ty / norm, 1.0 / norm)
            momenta[i, 4 * k] = px
            momenta[i, 4 * k + 1] = py
            momenta[i, 4 * k + 2] = pz
    weight[i] = w
    t_out[i] = t
    if full_state:
        store_beam_and_vertex(i, energy, x0, y0, theta_x, theta_y, z, target, beam_params, beam_out, vertex_out,
                              target_out)
    angles[i, 0] = theta_e
    angles[i, 1] = phi_e
    angles[i, 2] = theta_mu
    angles[i, 3] = phi_mu


@njit(parallel=True, cache=True)
def _elastic_chunk(seed, first_event, rows, weight_scale, beam_params, beam_profile, target_z, target_thickness,
                   target_cumulative, t_shape, t_cumulative, t_start, t_jacobian, running_shift, running_first, running_table,
                   cuts, radiation_params, weight, t_out, beam_out, vertex_out, target_out, momenta, angles):
    """`elastic_event_kernel` of events first_event + rows, in parallel."""
    for j in prange(rows.size):
        elastic_event_kernel(seed, first_event, rows[j], True, weight_scale, beam_params, beam_profile, target_z,
                             target_thickness, target_cumulative, t_shape, t_cumulative, t_start, t_jacobian,
                             running_shift, running_first, running_table, cuts, radiation_params, weight, t_out,
                             beam_out, vertex_out, target_out, momenta, angles)


@njit(cache=True)
def _particle_offsets(momenta):
    """CSR offsets of the outgoing particles: slots with positive energy, event by event."""
    offsets = np.empty(momenta.shape[0] + 1, dtype=np.int64)
    offsets[0] = 0
    for i in range(momenta.shape[0]):
        count = 0
        for slot in range(N_OUT):
            count += momenta[i, slot, 3] > 0.0
        offsets[i + 1] = offsets[i] + count
    return offsets


@njit(parallel=True, cache=True)
def _pack_particles(momenta, is_pair, muon_pdg, offsets, pdg, px, py, pz, energy):
    """The outgoing particles of every event (slots muon, electron, photon or positron; empty
    slots have zero energy) into the flat CSR arrays at `offsets`."""
    for i in prange(momenta.shape[0]):
        k = offsets[i]
        for slot in range(N_OUT):
            if momenta[i, slot, 3] > 0.0:
                if slot == 0:
                    pdg[k] = muon_pdg
                elif slot == 1:
                    pdg[k] = PDG_ELECTRON
                else:
                    pdg[k] = -PDG_ELECTRON if is_pair[i] else PDG_PHOTON
                px[k] = momenta[i, slot, 0]
                py[k] = momenta[i, slot, 1]
                pz[k] = momenta[i, slot, 2]
                energy[k] = momenta[i, slot, 3]
                k += 1


@njit(parallel=True, cache=True)
def _accept(seed, first_event, weight, max_weight, accepted):
    """Unweighting: event i is kept with probability weight / max_weight (its own uniform)."""
    for i in prange(weight.size):
        u = rng.uniform(seed, first_event + i, rng.STREAM_ELASTIC, 3)
        accepted[i] = u * max_weight < weight[i]


class Generator:
    """Events of `config` for one `seed`; any event k can be regenerated alone."""

    def __init__(self, config: GeneratorConfig, seed: int, max_weight: float | None = None):
        self.config = config
        self.seed = rng.validate_seed(seed)
        self._kernel_seed = np.uint64(self.seed)  # numba refuses Python ints >= 2^63
        beam = config.beam
        settings = config.elastic
        self.radiation = settings.radiation_model
        self.sampling = born_sampling(beam, settings.cuts, self.radiation)
        self.running_table = RunningTable.build(settings.running_coupling, *self.sampling.t_range_gev2)
        self.beam_params, self.beam_profile = beam.kernel_arrays()
        rates = [t.electron_areal_density_per_cm2 for t in config.targets]
        self.target_z, self.target_thickness, self.target_cumulative = target_arrays(config.targets, rates)
        self.cuts = cut_array(settings.cuts)
        self.pair = PairProcess(config.pair, beam, config.targets) if config.process != "elastic" else None
        self.pair_probability = self._pair_probability()
        self._sum_w = 0.0
        self._sum_w2 = 0.0
        self._trials = 0
        self._overweight = 0
        self.max_weight = max_weight
        self.unweighted_event_weight = math.nan
        self._metadata = {"config": to_plain(config), "config_hash": content_hash(config), "seed": self.seed,
                          "version": fastsim.__version__, "unweighted": config.unweighted}
        if config.unweighted:
            prescanned = self._prescan_max_weight()
            self.max_weight = prescanned if max_weight is None else max_weight

    def _pair_probability(self) -> float:
        """Probability that an event is a pair event: 0, 1, or for "all" the pair share of the
        total cross section (elastic: LO in the cuts at the mean beam energy; the weights stay
        exact whatever this share is, it only sets how many events of each kind are drawn)."""
        if self.pair is None:
            return 0.0
        if self.config.process == "pair":
            return 1.0
        sigma_pair = self.pair.sigma_per_electron_ub
        return sigma_pair / (sigma_pair + self.analytic_sigma_ub())

    # --- weighted events ------------------------------------------------------------------

    def chunk(self, first_event: int, n_events: int) -> TruthEvents:
        """Weighted events first_event .. first_event + n_events - 1 (zero weights included)."""
        return self._truth(first_event, *self.kernel_arrays(first_event, n_events))

    def kernel_arrays(self, first_event: int, n_events: int):
        """The generation kernel's raw output arrays (weight, t, beam, vertex, target, momenta,
        angles) for events first_event .. first_event + n_events - 1."""
        weight = np.empty(n_events)
        t = np.empty(n_events)
        beam = np.empty((n_events, 3))
        vertex = np.empty((n_events, 3))
        target = np.empty(n_events, dtype=np.int16)
        momenta = np.empty((n_events, N_OUT * 4))
        angles = np.empty((n_events, 4))
        is_pair = self.process_is_pair(first_event, n_events)
        elastic_rows = np.flatnonzero(~is_pair) if self.pair_probability > 0.0 else np.arange(n_events)
        pair_rows = np.flatnonzero(is_pair)
        if elastic_rows.size:
            _elastic_chunk(self._kernel_seed, np.int64(first_event), elastic_rows, *self.elastic_kernel_args(),
                           weight, t, beam, vertex, target, momenta, angles)
        if pair_rows.size:
            pair_chunk(self._kernel_seed, np.int64(first_event), pair_rows, self.beam_params, self.beam_profile,
                       self.config.pair.rate_scale * self.pair.sigma_per_electron_ub / self.pair_probability,
                       *self.pair.kernel_arrays(),
                       weight, beam, vertex, target, momenta, angles)
            t[pair_rows] = np.nan
        return weight, t, beam, vertex, target, momenta.reshape(n_events, N_OUT, 4), angles

    def elastic_kernel_args(self) -> tuple:
        """The arguments of `elastic_event_kernel` between `full_state` and the output arrays: the beam,
        targets, t sampling, running, cuts and radiation of this generator."""
        table = self.running_table
        return (1.0 / (1.0 - self.pair_probability), self.beam_params, self.beam_profile, self.target_z,
                self.target_thickness, self.target_cumulative, *self.sampling.arrays(), np.int64(table.shift),
                np.int64(table.first_index), table.coefficients, self.cuts, self.radiation.kernel_params())

    def process_is_pair(self, first_event: int, n_events: int) -> np.ndarray:
        """Which of the events are pair events: uniform 0 of STREAM_PROCESS below the pair
        probability."""
        if self.pair_probability == 0.0:
            return np.zeros(n_events, dtype=bool)
        if self.pair_probability == 1.0:
            return np.ones(n_events, dtype=bool)
        u = rng.uniform_array(self.seed, first_event, n_events, rng.STREAM_PROCESS, 1)[:, 0]
        return u < self.pair_probability

    def _truth(self, first_event, weight, t, beam, vertex, target, momenta, angles):
        n = weight.size
        is_pair = np.isnan(t)
        muon_pdg = -PDG_MUON if self.config.beam.charge > 0 else PDG_MUON
        offsets = _particle_offsets(momenta)
        particles = {name: np.empty(offsets[-1], dtype=dtype) for name, dtype in PARTICLE_COLUMNS.items()}
        _pack_particles(momenta, is_pair, muon_pdg, offsets, *particles.values())
        columns = {
            "event_id": np.arange(first_event, first_event + n, dtype=np.int64),
            "process": np.where(is_pair, PROCESS_CODES["pair"], PROCESS_CODES["elastic"]).astype(np.int8),
            "weight": weight, "beam_energy_gev": beam[:, 0], "beam_theta_x_rad": beam[:, 1],
            "beam_theta_y_rad": beam[:, 2], "vertex_x_cm": vertex[:, 0], "vertex_y_cm": vertex[:, 1],
            "vertex_z_cm": vertex[:, 2], "target_index": target, "t_gev2": t,
            "e_energy_gev": momenta[:, 1, 3], "e_theta_rad": angles[:, 0], "e_phi_rad": angles[:, 1],
            "mu_energy_gev": momenta[:, 0, 3], "mu_theta_rad": angles[:, 2], "mu_phi_rad": angles[:, 3],
            "photon_energy_gev": np.where(is_pair, 0.0, momenta[:, 2, 3]),
        }
        self._sum_w += float(weight.sum())
        self._sum_w2 += float(np.dot(weight, weight))
        self._trials += n
        return TruthEvents(columns, offsets, particles, self.metadata())

    # --- unweighted events ----------------------------------------------------------------

    def _prescan_max_weight(self, n_scan: int = 200_000, safety: float = 1.1) -> float:
        """Largest weight of a pre-scan of events far beyond those generated (indices from
        2^62), times `safety`."""
        scan = self.chunk(1 << 62, n_scan)
        self._sum_w = self._sum_w2 = 0.0
        self._trials = 0
        peak = float(scan["weight"].max())
        if peak <= 0:
            raise ValueError("the generation cuts leave no events with positive weight")
        self.unweighted_event_weight = float(scan["weight"].mean())
        return peak * safety

    def unweighted_chunk(self, first_trial: int, n_trials: int) -> TruthEvents:
        """Trials first_trial .. first_trial + n_trials - 1, kept with probability w / w_max.

        Kept events carry one common weight, the cross section estimated by the pre-scan (2e5
        events: about 1e-3 relative), so that the mean weight of a file is the cross section;
        `summary()` gives the estimate from all trials."""
        events = self.chunk(first_trial, n_trials)
        accepted = np.empty(n_trials, dtype=np.bool_)
        _accept(self._kernel_seed, first_trial, events["weight"], self.max_weight, accepted)
        over = int(np.count_nonzero(events["weight"] > self.max_weight))
        if over:
            self._overweight += over
            warnings.warn(f"{over} events had a weight above the pre-scanned maximum {self.max_weight:.6g} ub; "
                          "the unweighted sample is biased by their excess", RuntimeWarning, stacklevel=2)
        kept = events.select(accepted)
        kept.columns["weight"] = np.full(len(kept), self.unweighted_event_weight)
        return kept

    # --- the driver -------------------------------------------------------------------------

    def run(self, n_events: int, chunk_size: int = DEFAULT_CHUNK_SIZE):
        """Yield TruthEvents chunks until n_events events are produced (weighted: events
        0 .. n_events - 1; unweighted: the first n_events accepted trials)."""
        n_events = check_event_count(n_events)
        chunk_size = int(check_range("chunk_size", chunk_size, 1, 1e9))
        if not self.config.unweighted:
            for first in range(0, n_events, chunk_size):
                yield self.chunk(first, min(chunk_size, n_events - first))
            return
        produced, trial = 0, 0
        while produced < n_events:
            accepted = self.unweighted_chunk(trial, chunk_size)
            trial += chunk_size
            accepted = accepted.select(np.arange(len(accepted)) < n_events - produced)
            produced += len(accepted)
            yield accepted

    def summary(self) -> dict:
        """MC cross section (ub) and its error from the weights of all events seen so far."""
        n = max(self._trials, 1)
        mean = self._sum_w / n
        variance = max(self._sum_w2 / n - mean * mean, 0.0)
        return {"trials": self._trials, "sigma_ub": mean, "sigma_err_ub": math.sqrt(variance / n),
                "max_weight_ub": self.max_weight, "events_above_max_weight": self._overweight}

    def analytic_sigma_ub(self) -> float:
        """The LO cross section in the generation cuts at the mean beam energy (for checks)."""
        xsec = ElasticCrossSection(self.config.beam.mean_energy_gev, self.config.elastic.running_coupling)
        return xsec.sigma_ub(self.config.elastic.cuts)

    def metadata(self) -> dict:
        """Configuration, its hash, seed and version: saved with every output."""
        return dict(self._metadata)


#: Share of radiative events drawn from the log-uniform Born window below the E_e cut.
RADIATION_TAIL_SHARE = 0.3


def born_sampling(beam: BeamModel, cuts: ElasticCuts, radiation: RadiationModel) -> TSampling:
    """The density of the Born t for this beam, these cuts and this radiation model.

    Without radiation: ~1/t^2 on the cuts' t intervals (exact for a monochromatic beam, their
    hull over the beam's energy range otherwise). With radiation the final state is not the
    Born one: ~1/t^2 from t_min up to the E_e cut, plus, with probability
    RADIATION_TAIL_SHARE, ~1/|t| down to the Born electron energy below which no radiative
    event passes the cut (`min_born_energy_fraction`); all cuts apply to the final state.
    """
    energy_range = beam.energy_envelope_gev()
    if radiation.name == "none":
        return TSampling.inverse_t2(sampling_intervals(energy_range, cuts, beam.is_monochromatic))
    born_cuts = ElasticCuts(ee_min_gev=cuts.ee_min_gev)
    intervals = sampling_intervals(energy_range, born_cuts, exact=False)
    fraction = min(min_born_energy_fraction(energy, cuts.ee_min_gev) for energy in energy_range)
    tail_kinetic_gev = fraction * (cuts.ee_min_gev - ELECTRON_MASS_GEV)
    return TSampling.with_log_tail(intervals, -2.0 * ELECTRON_MASS_GEV * tail_kinetic_gev, RADIATION_TAIL_SHARE)


def check_event_count(n_events) -> int:
    """The number of events to generate: an integer >= 1."""
    return check_integer("events", n_events, 1)


def write_events(generator: Generator, n_events: int, path, chunk_size: int = DEFAULT_CHUNK_SIZE, progress=None) -> dict:
    """Generate n_events into the Parquet file `path` (atomically) and return the summary."""
    n_events = check_event_count(n_events)
    with TruthWriter(path, generator.metadata()) as writer:
        for events in generator.run(n_events, chunk_size):
            writer.write(events)
            if progress is not None:
                progress(len(events))
    return {"events": n_events, **generator.summary(), "output": str(path)}
