"""Scenes in, scenes out: loading, validating and generating point clouds (host side, numpy only).

Public API:
  Scene, load_scene, save_scene, validate_scene, DataError   (dos_jax.data.scene)
  make_scene                                                 (dos_jax.data.synthetic)
  scene_source                                               (dos_jax.data.catalog: the source config.data names)
  SceneSource                                                (dos_jax.data.sources)
Readers/converters for real datasets live in dos_jax.data.pointcept, label maps in dos_jax.data.labels and the
TFDS builders in dos_jax.data.tfds_builder (imported on demand: it pulls in tensorflow_datasets).
"""

from dos_jax.data.scene import DataError
from dos_jax.data.scene import load_scene
from dos_jax.data.scene import save_scene
from dos_jax.data.scene import Scene
from dos_jax.data.scene import validate_scene

__all__ = ["DataError", "Scene", "load_scene", "save_scene", "validate_scene", "make_scene", "scene_source",
           "SceneSource"]


def __getattr__(name):
  # Lazy so that `import dos_jax.data` stays cheap and free of import cycles.
  if name == "make_scene":
    from dos_jax.data import synthetic
    return synthetic.make_scene
  if name == "scene_source":
    from dos_jax.data import catalog
    return catalog.scene_source
  if name == "SceneSource":
    from dos_jax.data import sources
    return sources.SceneSource
  raise AttributeError(f"module 'dos_jax.data' has no attribute {name!r}")
