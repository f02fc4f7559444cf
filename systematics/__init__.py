"""systematics: templates in (theta_e, theta_mu), the fit of the hadronic running (K, M),
a_mu^HLO extraction, and the bias of each systematic effect on it.

A tour, in the order of the analysis:

- `systematics.histogram`: `Axis`, `Binning`, `Histogram` (values, variances, luminosity; JSON
  save/load; binning mismatches raise ValueError).
- `systematics.templates`: `TemplateSample` (selected events with true t, N generated and the
  running used at generation; from arrays, truth events or Parquet), `Template` (expected events
  for any hadronic parameters in tens of microseconds), `TemplateSet` (nuisance variations).
- `systematics.reweighting`: the LO reweighting factor and the hadronic families (K, M).
- `systematics.likelihood`: `BinnedLikelihood` (Baker-Cousins Poisson or chi2, free, constrained
  or fixed normalization, Gaussian-constrained nuisances, analytic gradient).
- `systematics.fit`: `fit_histogram(data, templates, method="minuit" | "grid" | "mcmc")` ->
  `FitResult` (`systematics.result`) with `.amu` and `.to_dict()`; `systematics.mcmc` for emcee.
- `systematics.toys`: `run_toys(templates, luminosity_inv_nb, n_toys, seed)` -> `ToyResult`.

Imports from `reco` and `fastsim`, never from `studies`.
"""
