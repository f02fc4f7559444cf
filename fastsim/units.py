"""Physical constants and unit conversions: the only place in the toolkit where they are defined.

Internal units are GeV (energy, momentum, mass), GeV^2 (t, s), cm (lengths), rad (angles) and
microbarn (cross sections). Lepton masses come from the PDG data in the `particle` package.
"""

from particle import Particle

# Fine-structure constant at zero momentum transfer, CODATA 2018 (1/137.035999084).
ALPHA0 = 1.0 / 137.035999084

# (hbar c)^2 = 0.3893793721 GeV^2 mb = 389.3793721 GeV^2 ub (PDG): 1 GeV^-2 = 389.3793721 ub.
GEV2_TO_UB = 389.3793721

MEV_TO_GEV = 1e-3

ELECTRON_MASS_GEV = Particle.from_pdgid(11).mass * MEV_TO_GEV
MUON_MASS_GEV = Particle.from_pdgid(13).mass * MEV_TO_GEV
TAU_MASS_GEV = Particle.from_pdgid(15).mass * MEV_TO_GEV

# Avogadro's number (exact, SI 2019), mol^-1.
AVOGADRO = 6.02214076e23

# 1 nb^-1 = 1e3 ub^-1.
INV_NB_TO_INV_UB = 1e3

PDG_ELECTRON = 11
PDG_MUON = 13
PDG_PHOTON = 22

# 1 pb = 1e-6 ub (LHE files give cross sections and weights in pb).
PB_TO_UB = 1e-6

# 1 ub = 1e-30 cm^2 (unit definition).
UB_TO_CM2 = 1e-30
