"""Config decoding of the batching: bad keys raise ConfigError naming the key."""

import pytest

from dos_jax.batching import spec
from dos_jax.errors import ConfigError
from tests import batching as helpers


def test_config_errors():
  with pytest.raises(ConfigError, match="supervision"):
    spec.batch_spec(helpers.cfg(supervision="everything"))
  with pytest.raises(ConfigError, match="feat_keys"):
    spec.batch_spec(helpers.cfg(**{"data.feat_keys": ("coord", "curvature")}))
  with pytest.raises(ConfigError, match="patch size"):
    spec.batch_spec(helpers.cfg(**{"data.capacity": 100}))


def test_views_key_is_checked():
  with pytest.raises(ConfigError, match="data.views"):
    spec.batch_spec(helpers.cfg(**{"data.views": "triplicate"}))
