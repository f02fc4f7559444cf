"""systematics: templates in (theta_e, theta_mu), the fit of the hadronic running (K, M),
a_mu^HLO extraction, and the bias of each systematic effect on it.

Imports from `reco` and `fastsim`, never from `studies`.
"""
