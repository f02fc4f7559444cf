"""fastsim: physics, event generation and detector simulation for MUonE.

The bottom layer of the toolkit. `fastsim.physics` holds the leading-order mu e -> mu e cross
section, the running of alpha (leptonic and hadronic vacuum polarization) and the a_mu^HLO master
integral; `fastsim.generator` produces weighted or unweighted truth events; `fastsim.detector`
transports them through targets and 2S strip modules. Nothing here imports reco, systematics or
studies.
"""

__version__ = "0.1.0"
