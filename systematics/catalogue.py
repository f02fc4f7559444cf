"""The catalogue of systematic effects: each one a named change of the chain configuration.

What to use when:

- `CATALOGUE` holds the built-in systematics (`names()` lists them, `get(name)` finds one).
  Each is a `Systematic`: one or more dotted configuration keys of `reco.chain.ChainConfig`
  (e.g. ``simulation.ms_scale``), how a shift changes them (scale, add, or set), its nominal
  one-sigma size in the key's own unit, and where that size comes from.
  `systematic.apply(config, n_sigma)` returns the shifted configuration; nothing else in the
  toolkit knows about systematics, so a systematic is never a code path inside the kernels.
- Add your own in TOML, a table per systematic (`from_table`, e.g. in a study preset)::

      [[systematics]]
      name = "x1_resolution"
      key = "geometry.stations.*.modules.0.cluster_resolution_cm"
      mode = "set"          # or "scale" (v * (1 + n sigma)), "add" (v + n sigma)
      sigma = 0.0030
      reference = "our test-beam measurement"

  or in Python, with one registered function of (configuration, n_sigma)::

      @register("my_effect", sigma=1.0, reference="...")
      def my_effect(config, n_sigma):
          return config.with_change("simulation.ms_scale", lambda v: v * (1 + 0.02 * n_sigma))

The sizes below are the design study's (REFERENCE.md: multiple scattering known to 1 %, beam
energy to a few MeV, longitudinal alignment to about 10 um over 1 m, 23 urad of residual angular
smearing) or, where REFERENCE.md gives none, our stated assumptions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from fastsim.config import check_choice, check_number, from_mapping

MODES = ("scale", "add", "set")


@dataclass(frozen=True)
class Systematic:
    """A systematic effect: keys of the chain configuration and how a shift of n_sigma changes them.

    Parameters
    ----------
    name : str
    keys : tuple of str
        Dotted keys of the chain configuration ("*" matches every element of an array).
    mode : str
        "scale": v -> v (1 + n_sigma sigma); "add": v -> v + n_sigma sigma; "set": v -> value
        for any n_sigma != 0 (a discrete alternative, such as another radiation model).
    sigma : float
        Nominal one-sigma size, relative for "scale", in the key's unit for "add".
    value : object
        The alternative of a "set" systematic.
    default : object
        The value of a key that the configuration leaves out (at its default), or None if the
        key must be present.
    one_sided : bool
        Only shifts of one sign are physical (an efficiency below 1): n_sigma is taken as |n_sigma|.
    reference, description : str
    function : callable, optional
        f(config, n_sigma) -> config, for effects that are not a change of keys (`register`).
    requires : tuple of (key, allowed values)
        Where the systematic has an effect: a configuration whose key holds none of the values
        (e.g. pair_normalization without generated pairs) is left out of a campaign (`applies_to`).
    """

    name: str
    keys: tuple = ()
    mode: str = "scale"
    sigma: float = 0.0
    value: object = None
    default: object = None
    one_sided: bool = False
    reference: str = ""
    description: str = ""
    function: Callable | None = field(default=None, compare=False)
    requires: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"systematic name = {self.name!r} must be an identifier (letters, digits, _)")
        if isinstance(self.keys, str):
            object.__setattr__(self, "keys", (self.keys,))
        object.__setattr__(self, "keys", tuple(self.keys))
        if self.function is None and not self.keys:
            raise ValueError(f"systematic {self.name!r}: give a key (or register a function)")
        check_choice(f"systematic {self.name!r}: mode", self.mode, MODES)
        if self.mode != "set":
            check_number(f"systematic {self.name!r}: sigma", self.sigma)
        elif self.value is None:
            raise ValueError(f"systematic {self.name!r}: mode = 'set' needs a value")

    def applies_to(self, config) -> str:
        """"" if the systematic can change results of `config`, else why not (its `requires`)."""
        for key, allowed in self.requires:
            value = config.value(key)
            if value not in allowed:
                return f"it needs {key} in {list(allowed)}, and {key} = {value!r} here"
        return ""

    @property
    def is_discrete(self) -> bool:
        """A switch to an alternative (no continuous size, no linearity check)."""
        return self.mode == "set" and self.function is None

    def shift_label(self, n_sigma: float) -> str:
        """The change in words, for tables: '+1 sigma (x 1.01)', 'radiation = nlo', ..."""
        if self.is_discrete:
            return ", ".join(f"{key} = {self.value!r}" for key in self.keys)
        return f"{n_sigma:+g} sigma"

    def apply(self, config, n_sigma: float):
        """The chain configuration `config` shifted by n_sigma; n_sigma = 0 returns it unchanged."""
        n_sigma = check_number(f"systematic {self.name!r}: n_sigma", n_sigma)
        if n_sigma == 0.0:
            return config
        if self.one_sided:
            n_sigma = abs(n_sigma)
        if self.function is not None:
            return self.function(config, n_sigma)
        changed = config
        for key in self.keys:
            changed = changed.with_change(key, self._change(n_sigma), create=self.default is not None)
        return changed

    def _change(self, n_sigma):
        def change(value):
            if value is None:
                value = self.default
            if self.mode == "set":
                return self.value
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"systematic {self.name!r}: the value {value!r} of its key is not a number")
            if self.mode == "scale":
                return value * (1.0 + n_sigma * self.sigma)
            return value + n_sigma * self.sigma

        return change

    def to_dict(self) -> dict:
        return {"name": self.name, "keys": list(self.keys), "mode": self.mode, "sigma": self.sigma,
                "value": self.value, "one_sided": self.one_sided, "reference": self.reference,
                "description": self.description, "requires": {key: list(values) for key, values in self.requires}}


# Module indices of the 2022 station layout (X1, Y1, U, V, X2, Y2): REFERENCE.md.
_DOWNSTREAM_MODULES = (4, 5)

CATALOGUE: dict[str, Systematic] = {}


def add(systematic: Systematic) -> Systematic:
    """Put `systematic` in the catalogue (an existing name is an error)."""
    if systematic.name in CATALOGUE:
        raise ValueError(f"systematic {systematic.name!r} is already in the catalogue")
    CATALOGUE[systematic.name] = systematic
    return systematic


def register(name: str, sigma: float = 1.0, reference: str = "", description: str = ""):
    """Decorator: register f(config, n_sigma) -> config as the systematic `name`."""

    def decorate(function):
        add(Systematic(name, mode="add", sigma=sigma, reference=reference,
                       description=description or (function.__doc__ or "").strip(), function=function))
        return function

    return decorate


def names() -> list[str]:
    return list(CATALOGUE)


def get(name: str) -> Systematic:
    """The systematic `name`; ValueError listing the known ones if there is none."""
    if name not in CATALOGUE:
        raise ValueError(f"systematic = {name!r} is unknown; known systematics: {names()}")
    return CATALOGUE[name]


def select(only=None) -> list[Systematic]:
    """The systematics named in `only` (a list or a comma-separated string), all if None."""
    if only is None:
        return list(CATALOGUE.values())
    if isinstance(only, str):
        only = [name.strip() for name in only.split(",") if name.strip()]
    if not only:
        raise ValueError("only = [] names no systematic")
    return [get(name) for name in only]


_TABLE_KEYS = ("name", "key", "keys", "mode", "sigma", "value", "default", "one_sided", "reference", "description")


def from_table(table: dict, where: str = "systematics") -> Systematic:
    """A systematic from a TOML table (see the module doc); its keys are checked against
    `config` when it is applied (`check_keys`)."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table, got {table!r}")
    unknown = sorted(set(table) - set(_TABLE_KEYS))
    if unknown:
        raise ValueError(f"unknown key {where}.{unknown[0]}; allowed: {', '.join(_TABLE_KEYS)}")
    table = dict(table)
    if "key" in table:
        if "keys" in table:
            raise ValueError(f"{where}: give key or keys, not both")
        table["keys"] = (table.pop("key"),)
    if "name" not in table:
        raise ValueError(f"missing required key {where}.name")
    return from_mapping(Systematic, table, where)


def check_keys(systematic: Systematic, config) -> None:
    """ValueError if a key of `systematic` does not exist in `config` (and has no default), or
    if the shifted configuration is invalid."""
    for key in systematic.keys:
        if systematic.default is None:
            try:
                config.value(key)
            except ValueError as error:
                raise ValueError(f"systematic {systematic.name!r}: {error}") from None
    try:
        systematic.apply(config, 1.0)
    except ValueError as error:
        raise ValueError(f"systematic {systematic.name!r}: {error}") from None


# --- the built-in catalogue ----------------------------------------------------------------------

add(Systematic("ms_scale", "simulation.ms_scale", "scale", 0.01, default=1.0,
               reference="REFERENCE.md / design study: multiple scattering known to 1 %",
               description="scale of every multiple-scattering width (Highland theta0)"))
add(Systematic("beam_energy_shift", "generator.beam.energy_shift_gev", "add", 0.003, default=0.0,
               reference="REFERENCE.md / design study: beam energy known to a few MeV",
               description="shift of the true mean beam energy; reconstruction keeps the nominal one"))
add(Systematic("beam_energy_spread", "generator.beam.energy_spread_rel", "scale", 0.1, default=0.0,
               reference="assumption: beam-energy spread known to 10 % of itself",
               description="relative Gaussian spread of the beam energy (no effect if the spread is 0)"))
add(Systematic("hit_resolution", "simulation.diffusion_sigma_cm", "scale", 0.2, default=7e-4,
               reference="assumption: effective charge-diffusion width 7 +- 1.4 um (digitization model)",
               description="intrinsic hit resolution through the strip-charge sharing; reconstruction "
                           "keeps its nominal hit errors"))
add(Systematic("station_length_scale", "geometry.stations.*.length_scale", "add", 1e-5, default=1.0,
               reference="REFERENCE.md / design study: longitudinal alignment about 10 um over 1 m",
               description="every station's z positions scaled by 1 + 1e-5 (10 um over 1 m)"))
add(Systematic("module_shift_x", "geometry.stations.*.modules.2.misalignment.dx_cm", "add", 1e-3, default=0.0,
               reference="assumption: transverse module alignment to 10 um",
               description="the U module of every station moved by 10 um along x"))
add(Systematic("module_rotation_z", "geometry.stations.*.modules.3.misalignment.rot_z_rad", "add", 5e-5,
               default=0.0, reference="assumption: module rotation about the beam known to 50 urad",
               description="the V module of every station rotated by 50 urad about z"))
add(Systematic("hit_efficiency", "geometry.stations.*.modules.0.hit_efficiency", "add", -0.01, default=1.0,
               one_sided=True, reference="assumption: module efficiencies known to 1 %",
               description="the first X module of every station 1 % less efficient than the others"))
add(Systematic("beam_divergence", ("generator.beam.divergence_x_rad", "generator.beam.divergence_y_rad"),
               "scale", 0.1, default=0.0, reference="assumption: divergence known to 10 %",
               description="beam divergence in both planes (no effect if zero)"))
add(Systematic("beam_spot", ("generator.beam.spot_x_cm", "generator.beam.spot_y_cm"), "scale", 0.1, default=0.0,
               reference="assumption: spot size known to 10 %", description="beam spot size in both planes"))
add(Systematic("target_thickness", "geometry.stations.*.target.thickness_cm", "scale", 0.005,
               reference="assumption: target thickness known to 0.5 %",
               description="thickness of every target (vertex distribution and material)"))
add(Systematic("pair_normalization", "generator.pair.rate_scale", "scale", 0.05, default=1.0,
               reference="PDG b_pair tables reproduced within 5 % (issue 4)",
               description="pair-production background rate (needs generator.process = 'all')",
               requires=(("generator.process", ("all", "pair")),)))
add(Systematic("residual_smearing", "selection.residual_smearing_rad", "add", 23e-6, default=0.0, one_sided=True,
               reference="REFERENCE.md: data narrower than MC by 23 urad per angle",
               description="extra Gaussian smearing of the reconstructed angles"))
add(Systematic("radiative_corrections", "generator.elastic.radiation", "set", value="nlo", default="none",
               reference="issue 8: LO versus NLO-like radiation (fastsim.generator.radiation)",
               description="QED radiation switched on (a discrete alternative, not a one-sigma shift)"))


@register("module_z", sigma=1e-3, reference="REFERENCE.md / design study: longitudinal alignment about 10 um")
def _module_z(config, n_sigma):
    """The two downstream modules (X2, Y2) of every station moved by 10 um along z (their lever
    arm changes, which a common shift of the station would not do)."""
    for module in _DOWNSTREAM_MODULES:
        config = config.with_change(f"geometry.stations.*.modules.{module}.misalignment.dz_cm",
                                    lambda v: (v or 0.0) + 1e-3 * n_sigma, create=True)
    return config
