"""Tests of the DOS projector/prototype head against a direct NumPy computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from dos_jax.models import heads


def _np_head(params, x):
  h = x @ np.asarray(params["proj_in"]["kernel"]) + np.asarray(params["proj_in"]["bias"])
  h = 0.5 * h * (1.0 + special.erf(h / np.sqrt(2.0)))  # exact GELU
  h = h @ np.asarray(params["proj_out"]["kernel"]) + np.asarray(params["proj_out"]["bias"])
  h = h / np.linalg.norm(h, axis=-1, keepdims=True)
  protos = np.asarray(params["prototypes"])
  protos = protos / np.linalg.norm(protos, axis=-1, keepdims=True)
  return h @ protos.T


@pytest.mark.system
def test_head_matches_numpy_and_is_batch_agnostic():
  head = heads.DOSHead(hidden=32, dim=8, num_prototypes=12)
  x = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 16))
  params = head.init(jax.random.PRNGKey(0), x[0, :1])["params"]
  assert set(params) == {"proj_in", "proj_out", "prototypes"}
  assert params["prototypes"].shape == (12, 8)
  cos = jax.jit(head.apply)({"params": params}, x)
  assert cos.shape == (2, 5, 12) and cos.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(cos), _np_head(params, np.asarray(x, np.float64)), atol=2e-5)
  assert np.abs(np.asarray(cos)).max() <= 1.0 + 1e-6
  flat = head.apply({"params": params}, x.reshape(10, 16))
  np.testing.assert_allclose(np.asarray(flat).reshape(2, 5, 12), np.asarray(cos), atol=1e-6)


@pytest.mark.system
def test_prototype_scale_does_not_matter_and_zero_features_stay_finite():
  head = heads.DOSHead(hidden_dim=16, out_dim=4, num_prototypes=6)  # alias spelling
  x = jax.random.normal(jax.random.PRNGKey(2), (7, 3))
  params = head.init(jax.random.PRNGKey(3), x)["params"]
  scaled = dict(params, prototypes=params["prototypes"] * 3.7)
  np.testing.assert_allclose(np.asarray(head.apply({"params": scaled}, x)),
                             np.asarray(head.apply({"params": params}, x)), atol=1e-6)
  zero_params = jax.tree.map(jnp.zeros_like, params)
  zero_params["prototypes"] = params["prototypes"]
  assert np.all(np.asarray(head.apply({"params": zero_params}, x)) == 0.0)


def test_bad_sizes_raise_config_error():
  x = jnp.zeros((1, 3))
  with pytest.raises(ValueError, match="hidden"):
    heads.DOSHead(dim=4, num_prototypes=3).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="dim"):
    heads.DOSHead(hidden=4, dim=4, out_dim=4, num_prototypes=3).init(jax.random.PRNGKey(0), x)
