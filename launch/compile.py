r"""Compile the training step for a TPU slice before renting it: memory per chip, cost, roofline, op counts.

  python -m launch.compile --config configs/<name>.py[:arg] --topology NAME [--config.key=value ...] \
      [--json PATH] [--max-batch]

Runs on a machine without a TPU, in a Python environment with libtpu (README "Before you rent a pod":
`pip install -r requirements-tpu.txt` in a separate venv). NAME is a topology as libtpu spells it: v5e:2x2,
v5e:4x4, v5p:2x2x1, v5p:4x4x4 (multi-host slices too), v4:2x2x1, v6e:2x2. The step compiled is the one
`launch.train` runs with this config on that slice (`dos_jax.train.aot`); `config.batch_size` is the global batch
and must split over the slice's devices (e.g. --config.batch_size=16 for 4 scenes per chip on v5e:2x2).

Prints one line (`dos_jax.compile_report.one_line`) and, with --json, writes the same as JSON (atomically).
--max-batch also finds the largest per-device batch that fits HBM by compiling (doubling, then bisection, in
steps of data.pack_scenes scenes when packing, else of one scene); the line and the JSON add it.

Exit codes: 0 fits HBM, 3 does not fit, 2 bad config or topology (one line), 4 libtpu is not installed,
1 the compile failed for another reason (one line).
"""

import os

from dos_jax import compile_only

compile_only.use_compile_only_tpu()  # before JAX is imported

import contextlib  # noqa: E402
import sys  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from dos_jax import schema  # noqa: E402
from dos_jax.errors import ConfigError, DataError  # noqa: E402
from launch import cli  # noqa: E402
from launch import console  # noqa: E402

EXIT_FITS, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DOES_NOT_FIT, EXIT_NO_COMPILER = 0, 1, 2, 3, 4

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, e.g. configs/scannet.py[:smoke].", lock_config=True)
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU topology as libtpu names it, e.g. v5e:2x2, v5p:4x4x4.")
_JSON = flags.DEFINE_string("json", None, "Also write the report as JSON to this path (atomically).")
_MAX_BATCH = flags.DEFINE_bool("max-batch", False, "Also find the largest per-device batch that fits HBM.")
flags.mark_flags_as_required(["config", "topology"])


@contextlib.contextmanager
def _libtpu_quiet():
  """libtpu's start-up writes warnings about the absent TPU (no metadata server, no worker hostnames) straight to
  file descriptor 2; none is actionable for a compile-only run. DOS_LIBRARY_LOGS=1 keeps them. Errors still come
  back as Python exceptions, which main prints."""
  if console.library_logs_requested():
    yield
    return
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def _config_name() -> str:
  """The --config value as given ('configs/scannet.py:smoke')."""
  return config_flags.get_config_filename(flags.FLAGS["config"])


def _report(result, chip, config_name, topology):
  return result.report(chip, config=config_name, topology=topology)


def _search_max_batch(config, devices, chip, first):
  """{'scenes_per_device', 'scenes_per_chip', 'unit', 'probes', 'report'}: the largest fitting batch by compiling."""
  from dos_jax.train import aot  # pylint: disable=g-import-not-at-top
  unit = aot.batch_unit(config)
  n = first["devices"]
  probes, reports = [], {}

  def fits(k):
    cfg = aot.with_scenes_per_device(config, k * unit, n)
    try:
      r = _report(aot.compile_train_step(schema.validate(cfg), devices), chip, first["config"], first["topology"])
    except aot.OutOfMemoryError as e:
      probes.append({"scenes_per_device": k * unit, "fits": False, "compiler": str(e)[:200]})
      return False
    reports[k] = r
    probes.append({"scenes_per_device": k * unit, "fits": r["fits"],
                   "total_bytes_per_chip": r["memory_per_chip"]["total"], "compile_seconds": r["compile_seconds"]})
    return r["fits"]

  start = aot.unit_count(config, n)
  reports[start] = first
  k = aot.max_batch(lambda k: first["fits"] if k == start else fits(k), start)
  best = reports.get(k)
  dpc = first["devices_per_chip"]
  return {"scenes_per_device": k * unit, "scenes_per_chip": k * unit * dpc, "unit": unit, "probes": probes,
          "report": {key: best[key] for key in ("memory_per_chip", "flops_per_chip", "bytes_accessed_per_chip",
                                                "roofline", "scenes_per_s_per_chip", "fits")} if best else None}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = schema.validate(_CONFIG.value)  # the gate, as training: a bad key fails before anything compiles
    from dos_jax import compile_report  # pylint: disable=g-import-not-at-top
    from dos_jax import io  # pylint: disable=g-import-not-at-top
    from dos_jax.train import aot  # pylint: disable=g-import-not-at-top
    topology = _TOPOLOGY.value
    chip = compile_report.chip_spec(topology)
    if chip is None:
      raise ConfigError(f"--topology={topology!r}: no chip table entry for this generation (known: "
                        f"{', '.join(compile_report.CHIPS)}; dos_jax/compile_report.py CHIPS)")
    with _libtpu_quiet():
      devices = aot.topology_devices(topology)
    try:
      result = aot.compile_train_step(config, devices)
    except aot.OutOfMemoryError as e:
      print(f"{_config_name()} on {topology}: DOES NOT FIT HBM (the TPU compiler refused it: {e})")
      if _JSON.value:
        io.write_json(_JSON.value, compile_report.refused(e, chip, _config_name(), topology))
      return EXIT_DOES_NOT_FIT
    report = _report(result, chip, _config_name(), topology)
    line = compile_report.one_line(report)
    if _MAX_BATCH.value:
      report["max_batch"] = _search_max_batch(config, devices, chip, report)
      mb = report["max_batch"]
      line += (f"; max batch {mb['scenes_per_chip']} scenes/chip ({mb['scenes_per_device']} per device, steps of "
               f"{mb['unit']}, {len(mb['probes']) + 1} compiles)")
    if _JSON.value:
      io.write_json(_JSON.value, report)
    print(line)
    return EXIT_FITS if report["fits"] else EXIT_DOES_NOT_FIT
  except (ConfigError, DataError) as e:
    print(f"{type(e).__name__}: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT
  except Exception as e:  # pylint: disable=broad-except  (one clear line instead of a trace through XLA)
    from dos_jax.train import aot  # pylint: disable=g-import-not-at-top
    if isinstance(e, aot.CompilerUnavailableError):
      print(f"CompilerUnavailableError: {e}", file=sys.stderr)
      return EXIT_NO_COMPILER
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
    print(f"CompileError: compiling the train step for {_TOPOLOGY.value} failed: {type(e).__name__}: {first}",
          file=sys.stderr)
    return EXIT_FAILED


if __name__ == "__main__":
  console.quiet_libraries()
  app.run(main, flags_parser=cli.parse_flags)
