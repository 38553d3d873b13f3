"""ModelSpec: a hand-built spec with a bad field fails at construction, naming the field; good specs build."""

import dataclasses

import pytest

from dos_jax import variants
from dos_jax.models import spec as spec_lib
from dos_jax.models.spec import ModelSpec

ARCH = variants.Architecture(type="PT-v3m2", channels=(16, 32), depths=(1, 1), heads=(1, 2), patch_sizes=(32, 32),
                             orders=("z", "hilbert"), mask_token=True, layer_scale=False)


def test_good_specs_and_their_architecture():
  assert spec_lib.architecture_of(ModelSpec(variant="small")).channels == tuple(variants.VARIANTS["small"]["channels"])
  assert spec_lib.architecture_of(ModelSpec(architecture=ARCH)) is ARCH
  hash(ModelSpec(architecture=ARCH))  # jitted functions close over it


@pytest.mark.parametrize("fields, named", [
    (dict(variant="huge"), "variant='huge'"),
    (dict(dtype="float16"), "dtype='float16'"),
    (dict(attention="flash"), "attention='flash'"),
    (dict(architecture=dataclasses.replace(ARCH, type="PT-v4")), "architecture.type='PT-v4'"),
    (dict(architecture=dataclasses.replace(ARCH, depths=(1,))), "one entry per stage"),
    (dict(architecture=dataclasses.replace(ARCH, heads=(3, 2))), "must divide channels"),
    (dict(architecture=dataclasses.replace(ARCH, orders=("z", "morton"))), "architecture.orders"),
])
def test_bad_field_is_named(fields, named):
  with pytest.raises(ValueError, match="ModelSpec: .*" + named.replace("(", r"\(")):
    ModelSpec(**fields)


def test_an_explicit_architecture_does_not_need_a_known_variant():
  ModelSpec(variant="from-checkpoint", architecture=ARCH)
