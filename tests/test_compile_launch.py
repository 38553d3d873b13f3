"""`python -m launch.compile`: flags, exit codes, the one line and the JSON.

Without libtpu the command runs through a small driver that replaces only `aot.topology_devices` (4 host CPU
devices stand in for a v5e:2x2 slice) or the chip table's HBM: everything else (config gate, the training step's
lowering and compile, the report, the JSON, the exit code) is the real code. With libtpu (this Python, or
$DOS_TPU_PYTHON, which .ci/run installs) a `:smoke` config is compiled for a real v5e:2x2 TPU target.
"""

import json
import os
import subprocess
import sys

import pytest

from dos_jax import compile_report
from tests import conftest

pytestmark = pytest.mark.system  # every test starts `launch.compile` in a process

ROOT = conftest.ROOT
SMOKE = ["--config=configs/scannet.py:smoke", "--topology=v5e:2x2", "--config.batch_size=4"]

_DRIVER = """
import sys
import jax
from dos_jax import compile_report
from dos_jax.train import aot
mode = sys.argv.pop(1)
if mode in ("cpu", "tiny"):
  aot.topology_devices = lambda name: jax.devices()[:4]
if mode == "tiny":
  compile_report.CHIPS["v5e"] = compile_report.Chip("v5e", hbm_gib=1e-4, peak_tflops=197, hbm_gbps=819)
if mode == "nolibtpu":
  aot.libtpu_installed = lambda: False
if mode == "refused":  # the TPU compiler's own refusal, as libtpu words it
  aot.topology_devices = lambda name: jax.devices()[:4]
  def refuse(config, devices):
    raise aot.OutOfMemoryError("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                               "temporaries (40.91G) exceeds available HBM (15.75G).")
  aot.compile_train_step = refuse
from absl import app
from launch import compile as launch_compile
from launch import cli
app.run(launch_compile.main, flags_parser=cli.parse_flags)
"""


def _run(args, mode=None, python=None, timeout=900):
  cmd = [python or sys.executable] + (["-c", _DRIVER, mode] if mode else ["-m", "launch.compile"]) + list(args)
  env = dict(os.environ)
  if python is not None:  # the TPU program is large: keep it out of the tests' CPU compile cache
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _one_line(text):
  lines = [l for l in text.splitlines() if l.strip()]
  assert len(lines) == 1, text
  return lines[0]


def test_bad_config_key_and_unknown_chip_exit_2_with_one_line():
  r = _run(SMOKE + ["--config.not_a_key=1"], mode="nolibtpu")
  assert r.returncode == 2 and "--config.not_a_key" in _one_line(r.stderr) and not r.stdout.strip()
  r = _run(["--config=configs/scannet.py:smoke", "--topology=v9x:2x2"], mode="nolibtpu")
  assert r.returncode == 2 and "v9x:2x2" in _one_line(r.stderr)
  r = _run(SMOKE + ["--config.zipf_alpha=-1"], mode="nolibtpu")
  assert r.returncode == 2 and "zipf_alpha" in _one_line(r.stderr)


def test_without_libtpu_exit_4_with_one_line(tmp_path):
  out = tmp_path / "r.json"
  r = _run(SMOKE + [f"--json={out}"], mode="nolibtpu")
  assert r.returncode == 4 and "requirements-tpu.txt" in _one_line(r.stderr) and not out.exists()


def test_fits_exit_0_and_json_is_the_line(tmp_path):
  out = tmp_path / "r.json"
  r = _run(SMOKE + [f"--json={out}"], mode="cpu")
  assert r.returncode == 0, r.stderr[-2000:]
  report = json.loads(out.read_text())
  assert _one_line(r.stdout) == compile_report.one_line(report)
  assert report["fits"] and report["config"] == "configs/scannet.py:smoke" and report["topology"] == "v5e:2x2"
  assert (report["devices"], report["chips"], report["scenes_per_step"], report["scenes_per_chip"]) == (4, 4, 4, 1)
  mem = report["memory_per_chip"]
  assert mem["total"] == mem["argument"] + mem["output"] - mem["alias"] + mem["temp"] + mem["generated_code"] > 0
  assert report["flops_per_chip"] > 0 and report["bytes_accessed_per_chip"] > 0
  assert report["ops"]["gathers"] > 0 and report["ops"]["scatters"] > 0  # serialization orders, pooling
  assert report["roofline"]["step_s"] == max(report["roofline"]["compute_s"], report["roofline"]["memory_s"])


def test_does_not_fit_exit_3_and_max_batch_zero(tmp_path):
  out = tmp_path / "r.json"
  r = _run(SMOKE + [f"--json={out}", "--max-batch"], mode="tiny")
  assert r.returncode == 3, r.stderr[-2000:]
  report = json.loads(out.read_text())
  line = _one_line(r.stdout)
  assert not report["fits"] and "DOES NOT FIT" in line and report["hbm_bytes_per_chip"] == int(1e-4 * 2 ** 30)
  # Not even one scene per device fits: the search stops without another compile.
  assert report["max_batch"]["scenes_per_device"] == 0 and report["max_batch"]["probes"] == []
  assert "max batch 0 scenes/chip" in line


def test_compiler_refusal_exit_3_with_its_numbers_in_the_json(tmp_path):
  out = tmp_path / "r.json"
  r = _run(SMOKE + [f"--json={out}"], mode="refused")
  assert r.returncode == 3, r.stderr[-2000:]
  assert "DOES NOT FIT HBM" in _one_line(r.stdout) and "40.91G" in r.stdout
  report = json.loads(out.read_text())
  assert report["fits"] is False and report["required_temp_bytes"] == int(40.91 * 2 ** 30)
  assert report["topology"] == "v5e:2x2" and report["config"] == "configs/scannet.py:smoke"


def test_libtpu_compiles_smoke_for_v5e(tmp_path):
  """The real TPU compiler: the smoke step for a v5e:2x2 slice, and libtpu's refusal of a bad topology."""
  python = conftest.require_tpu_python()
  out = tmp_path / "tpu.json"
  r = _run(SMOKE + [f"--json={out}"], python=python)
  assert r.returncode == 0, r.stderr[-2000:]
  report = json.loads(out.read_text())
  assert _one_line(r.stdout) == compile_report.one_line(report)
  assert report["chip"]["name"] == "v5e" and report["devices"] == 4 and report["fits"]
  assert report["flops_per_chip"] > 0 and report["bytes_accessed_per_chip"] > 0
  assert report["ops"]["gathers"] > 0 and report["ops"]["collectives"] >= 1  # the gradient all-reduce
  r = _run(["--config=configs/scannet.py:smoke", "--topology=v5e:3x3"], python=python)
  assert r.returncode == 2 and "v5e:3x3" in _one_line(r.stderr)


_KERNEL_PROBE = """
from dos_jax import compile_only
compile_only.use_compile_only_tpu()
import json, re, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from dos_jax.models import attention
from dos_jax.train import aot
mesh = Mesh(np.asarray(aot.topology_devices("v5e:2x2")), ("data",))
x = jax.ShapeDtypeStruct((8, 256, 2, 16), jnp.float32, sharding=NamedSharding(mesh, P("data")))
s = jax.ShapeDtypeStruct((8, 256), jnp.int32, sharding=NamedSharding(mesh, P("data")))
def loss(q, k, v, seg, kernel):
  ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=(seg[:, :, None] == seg[:, None, :])[:, None])
  if kernel == "xla":
    return jnp.sum(ref(q, k, v) ** 2)
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    return jnp.sum(attention.segment_attention(q, k, v, seg, seg, ref, kernel=kernel) ** 2)
out = {}
for kernel in ("xla", "flash", "patch"):
  c = jax.jit(jax.grad(lambda q, k, v, seg: loss(q, k, v, seg, kernel), argnums=(0, 1, 2))).lower(x, x, x, s).compile()
  text = c.as_text()
  out[kernel] = {"bytes": c.cost_analysis()["bytes accessed"], "custom": text.count("tpu_custom_call"),
                 "scores": text.count("f32[2,2,256,256]"),  # one device's [patches, heads, P, P] score matrices
                 "width16_minor": len(re.findall(r"f32\\[[\\d,]*,16\\]\\{3,", text))}  # head width in 128-lane tiles
print(json.dumps(out))
"""


def test_libtpu_lowers_the_attention_kernels_for_tpu():
  """Under a mesh, compiled for TPU, patch attention is a Pallas kernel (Mosaic custom calls, no score matrix in
  HBM, fewer bytes than XLA's formulation, which holds [patches, heads, P, P] scores). The default, this project's
  positions-minor kernel, keeps no 16-wide head axis minor (which a TPU pads to 128 lanes) and moves fewer bytes
  than the generic flash kernel, which does."""
  python = conftest.require_tpu_python()
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  r = subprocess.run([python, "-c", _KERNEL_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  got = json.loads(r.stdout.strip().splitlines()[-1])
  xla, flash, patch = got["xla"], got["flash"], got["patch"]
  assert xla["custom"] == 0 and xla["scores"] > 0
  assert flash["custom"] >= 3  # forward, dq and dkv kernels
  assert flash["scores"] <= 2  # (the dq kernel takes row statistics broadcast to [., ., P, block], here P = block)
  assert patch["custom"] >= 2 and patch["scores"] == 0  # forward and backward kernels
  assert flash["width16_minor"] > 0 and patch["width16_minor"] == 0
  assert patch["bytes"] < flash["bytes"] < xla["bytes"]


_SHAPES_PROBE = """
from dos_jax import compile_only
compile_only.use_compile_only_tpu()
import importlib, json, jax, jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from dos_jax import schema, variants
from dos_jax.batching import spec as spec_lib
from dos_jax.models import patch_kernel
from dos_jax.train import aot
shapes = set()
for name in ("scannet", "semantickitti", "nuscenes", "s3dis"):
  config = schema.validate(importlib.import_module("configs." + name).get_config(None))
  pack = spec_lib.pipeline_spec(config).pack
  arch = variants.variant_architecture(config.model.variant)
  for s, (heads, channels, patch) in enumerate(zip(arch.heads, arch.channels, arch.patch_sizes)):
    for lengths in (pack.teacher_sequence, pack.student_sequence):
      p = min(patch, lengths[s])
      if p >= 128:  # shorter patches take XLA's formulation
        shapes.add((heads, channels // heads, p + -p % 128))
sharding = NamedSharding(Mesh(aot.topology_devices("v5e:2x2")[:1], ("d",)), P())
loss = lambda q, k, v, seg: jnp.sum(patch_kernel.patch_attention(q, k, v, seg, seg).astype(jnp.float32) ** 2)
done = []
shapes = sorted(shapes)
for heads, width, p in shapes:
  # bf16 (16-row sublane tiles) at the first and last shapes: the fewest and the most heads per grid step.
  for dtype in (jnp.float32, jnp.bfloat16) if (heads, width, p) in (shapes[0], shapes[-1]) else (jnp.float32,):
    x = jax.ShapeDtypeStruct((2, heads, width, p), dtype, sharding=sharding)
    seg = jax.ShapeDtypeStruct((2, p), jnp.int32, sharding=sharding)
    jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(x, x, x, seg).compile()
    done.append([heads, width, p, jnp.dtype(dtype).name])
print(json.dumps(done))
"""


def test_libtpu_lowers_the_patch_kernel_at_every_stage_shape_of_the_paper_configs():
  """Mosaic accepts the kernel (forward and backward, float32 and bfloat16) at each (heads, head width, padded
  patch) the paper configs' packs give their stages (f32; bf16 at two of them): a shape it rejects would otherwise surface only ~20 minutes
  into a full-step compile. Includes the deep stages' partial patches (640-896 positions, 128-wide query blocks)."""
  python = conftest.require_tpu_python()
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  r = subprocess.run([python, "-c", _SHAPES_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
  assert r.returncode == 0, r.stderr[-3000:]
  done = json.loads(r.stdout.strip().splitlines()[-1])
  assert {tuple(x[:3]) for x in done} >= {(3, 16, 1024), (32, 16, 896)}  # scannet's first and KITTI's last stage
  assert len(done) >= 6 + 2 and sum(x[3] == "bfloat16" for x in done) == 2


def test_libtpu_block_costs_have_estimated_cycles_and_no_sequence_pads(tmp_path):
  """`benchmarks.tpu_block` on the smoke config: each stage's block compiles for v5e (teacher forward, student
  forward + backward) with the compiler's estimated cycles split by part, and the packed attention leaves no `pad`
  op (a pad copies the whole sequence: the sentinel reads go through the gather's fill mode, the partial-patch
  fill through the order; round 7's program had one per gather)."""
  python = conftest.require_tpu_python()
  env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  out = tmp_path / "block.json"
  r = subprocess.run([python, "-m", "benchmarks.tpu_block", "--config", "configs/scannet.py:smoke",
                      "--config.batch_size=4", "--topology", "v5e:2x2", "--stages", "0", "--out", str(out)],
                     cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
  assert r.returncode == 0, r.stderr[-2000:]
  stage = json.loads(out.read_text())["stages"]["0"]
  for program in ("teacher_forward", "student_fwd_bwd"):
    costs = stage[program]
    assert costs["estimated_cycles"] > 0 and costs["estimated_cycles"] == sum(costs["cycles_by_part"].values())
    assert costs["cycles_by_part"].get("attention: serialization gathers/scatters", 0) > 0
    assert costs["cycles_by_part"].get("CPE (neighbour gather + conv)", 0) > 0
    assert costs["attention_pads"] == 0
    assert 0 < costs["hbm_bytes"] and costs["flops"] > 0
  assert stage["student_fwd_bwd"]["flops"] > stage["teacher_forward"]["flops"] * 0.5 * stage["student_slots"] / stage["teacher_slots"]
