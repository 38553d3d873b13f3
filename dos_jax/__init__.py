"""dos_jax: DOS (Distilling Observable Softmaps of Zipfian Prototypes) in JAX/Flax.

Data flows one way: data -> batching -> models -> objective -> train -> launch.
"""

__version__ = "0.1.0"
