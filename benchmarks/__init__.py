"""Benchmark suite for hnnjax: ESS per second against BlackJAX and NumPyro in the same run.

Run it with ``python -m benchmarks.run --suite quick|full|smoke``; see ``benchmarks/run.py``.

Modules, one idea each:

- ``suites``    the settings of the smoke, quick and full suites
- ``datasets``  the seeded synthetic grid (J x true tau) and eight schools
- ``metrics``   ESS / R-hat (one estimator for every sampler) and the per-run figures
- ``samplers``  the hnnjax runners (NUTS/HMC, both parametrizations) and the exact sampler
- ``peers``     the BlackJAX and NumPyro runners (same density, same settings)
- ``measure``   compile time, warm wall time over repeats, the per-cell summaries
- ``scaling``   ESS/s and wall time against J and against the number of chains
- ``fresh``     time to result from a fresh Python process
- ``lanes``     the useful-step share of vmapped NUTS (``python -m benchmarks.lanes``)
- ``machine``   platform, devices and library versions recorded with every result
- ``report``    the Markdown tables, the headline ratios and the optional plots
"""
