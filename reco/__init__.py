"""reco: track finding and fitting, vertexing, particle identification and the analysis selection.

Turns the hits simulated by `fastsim` into reconstructed observables (theta_e, theta_mu,
acoplanarity, vertex) with the nominal geometry. Imports only from `fastsim`.
"""
