"""PyTorch references of dos_jax components, for numerics parity and benchmarks (not production code).

Submodules import `torch` (a dev/parity dependency, CPU wheel is enough); importing this package does not.
  objective: zipf_prior, zipf_sinkhorn, softmap, softmap_kl, clustering_*, dos_loss (same semantics as
    dos_jax.objective, written independently in eager PyTorch).
"""
