"""Model zoos: many checkpoints of one base (METHODS.md section 13).

- :mod:`.store`: the harness's saved results and shard records, verified when read (a damaged one is recomputed).
- :mod:`.jobqueue`: Dask clusters on SLURM / PBS / SGE through dask-jobqueue.
- :mod:`.spectra`: per-matrix spectral diagnostics (power-law exponent, stable and effective rank, Marchenko-Pastur).
- :mod:`.lineage`: the family tree of a zoo from its weights (MoTHer).
"""
