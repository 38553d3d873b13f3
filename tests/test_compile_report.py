"""dos_jax.compile_report: roofline arithmetic, memory totals, the fits decision, loop-scaled costs (no libtpu)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import compile_report
from tests.test_hlo_costs import _HLO


def test_roofline_of_the_issue_numbers():
  """The issue's scannet base step on v5e: 2.96 TFLOP, 281.7 GB -> max(15.0 ms, 344 ms) = 0.344 s, MFU 4.37%."""
  chip = compile_report.CHIPS["v5e"]
  r = compile_report.roofline(2.96e12, 281.7e9, chip)
  assert r["compute_s"] == pytest.approx(2.96e12 / 197e12, rel=1e-12)
  assert r["memory_s"] == pytest.approx(281.7e9 / 819e9, rel=1e-12)
  assert r["step_s"] == r["memory_s"] and r["bound"] == "memory"
  assert r["mfu"] == pytest.approx((2.96 / 197) / (281.7 / 819), rel=1e-12)
  assert 0.0436 < r["mfu"] < 0.0438
  assert r["flops_per_byte"] == pytest.approx(2.96e12 / 281.7e9)
  c = compile_report.roofline(1e15, 1e9, chip)
  assert c["bound"] == "compute" and c["mfu"] == 1.0


def test_chip_table_names():
  assert compile_report.chip_spec("v5e:2x2").name == "v5e"
  assert compile_report.chip_spec("v5litepod-16").name == "v5e"
  assert compile_report.chip_spec("v5p:4x4x4").name == "v5p"
  assert compile_report.chip_spec("v4:2x2x1").name == "v4"
  assert compile_report.chip_spec("v6e:2x2").name == "v6e"
  assert compile_report.chip_spec("TPU v5 lite").name == "v5e"
  assert compile_report.chip_spec("TPU v6 lite").name == "v6e"
  assert compile_report.chip_spec("TPU v5").name == "v5p"
  assert compile_report.chip_spec("v9:2x2") is None


def _fake(arg, out, alias, temp, code, cost, text=_HLO):
  mem = types.SimpleNamespace(argument_size_in_bytes=arg, output_size_in_bytes=out, alias_size_in_bytes=alias,
                              temp_size_in_bytes=temp, generated_code_size_in_bytes=code)
  return types.SimpleNamespace(memory_analysis=lambda: mem, cost_analysis=lambda: cost, as_text=lambda: text)


def test_build_per_chip_totals_and_the_fits_boundary():
  chip = compile_report.Chip("test", hbm_gib=1, peak_tflops=100, hbm_gbps=100)
  hbm = compile_report.GIB
  # total = arg + out - alias + temp + code, exactly the HBM: fits; one byte more: does not.
  exact = _fake(400, 300, 200, hbm - 500 - 100, 100, {"flops": 2e12, "bytes accessed": 3e9, "optimal_seconds": -5.0})
  r = compile_report.build(exact, chip, devices=4, scenes_per_step=8, config="c", topology="t")
  assert r["memory_per_chip"]["total"] == hbm and r["fits"] and r["chips"] == 4
  assert r["optimal_seconds"] is None  # negative estimates are dropped
  assert r["roofline"]["step_s"] == pytest.approx(max(2e12 / 100e12, 3e9 / 100e9))
  assert r["scenes_per_chip"] == 2 and r["scenes_per_s_per_chip"] == pytest.approx(2 / 0.03)
  over = _fake(400, 300, 200, hbm - 500 - 100 + 1, 100, [{"flops": 1.0, "bytes accessed": 1.0, "optimal_seconds": 2.0}])
  r = compile_report.build(over, chip, devices=4)
  assert not r["fits"] and r["optimal_seconds"] == 2.0
  # Two devices per chip (v4 TensorCores): per-chip memory and cost are twice one device's.
  r2 = compile_report.build(exact, chip, devices=8, devices_per_chip=2)
  assert r2["chips"] == 4 and r2["memory_per_chip"]["total"] == 2 * hbm and not r2["fits"]
  assert r2["flops_per_chip"] == 4e12 and r2["bytes_accessed_per_chip"] == 6e9
  line = compile_report.one_line(compile_report.build(exact, chip, devices=4, config="c", topology="t"))
  assert line.startswith("c on t (4 chips): FITS HBM") and "gathers 1, scatters 1, sorts 1, while loops 1" in line
  assert "\n" not in line
  # The parsed HBM traffic, logical and at tiled sizes, each with its roofline (per chip: x devices per chip).
  from dos_jax import hlo_costs  # pylint: disable=g-import-not-at-top
  totals = hlo_costs.parsed_totals(hlo_costs.instruction_costs(_HLO))
  assert 0 < totals["hbm_bytes"] <= totals["hbm_tiled_bytes"]
  for report, per_chip in ((r, 1), (r2, 2)):
    p = report["parsed"]
    assert p["hbm_bytes_per_chip"] == per_chip * totals["hbm_bytes"]
    assert p["hbm_tiled_bytes_per_chip"] == per_chip * totals["hbm_tiled_bytes"]
    assert p["roofline_hbm_tiled"] == compile_report.roofline(report["flops_per_chip"], p["hbm_tiled_bytes_per_chip"],
                                                              chip)
  assert f"{totals['hbm_tiled_bytes'] / 1e9:.4g} GB in whole tiles" in line


def test_build_reads_a_real_cpu_compile():
  """memory_analysis / cost_analysis of an actual XLA compile go through unchanged (per device, 1 device/chip)."""
  x = np.ones((256, 256), np.float32)
  compiled = jax.jit(lambda a: a @ a).lower(x).compile()
  r = compile_report.build(compiled, compile_report.CHIPS["v5e"], devices=1)
  assert r["flops_per_chip"] == pytest.approx(2 * 256 ** 3, rel=0.01)
  assert r["memory_per_chip"]["argument"] == x.nbytes and r["memory_per_chip"]["output"] == x.nbytes
  assert r["fits"] and r["ops"]["gathers"] == 0


def test_refused_report_reads_the_compilers_numbers():
  msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (40.91G) "
         "exceeds available HBM (15.75G).")
  r = compile_report.refused(RuntimeError(msg), compile_report.chip_spec("v5e:2x2"), "configs/x.py", "v5e:2x2")
  assert r["fits"] is False and r["chip"]["name"] == "v5e" and r["compiler"] == msg
  assert r["required_temp_bytes"] == int(40.91 * 2**30) and r["available_bytes"] == int(15.75 * 2**30)
  r = compile_report.refused(RuntimeError("RESOURCE_EXHAUSTED: other wording"), compile_report.chip_spec("v5p:2x2x1"),
                             "c", "v5p:2x2x1")
  assert "required_temp_bytes" not in r and r["fits"] is False


def test_build_scales_the_compilers_once_per_loop_totals():
  """XLA's cost analysis counts a loop body once; the report's flops are per step (a 5-step scan of a matmul:
  5x the compiler's count) and it keeps the compiler's own numbers beside them."""
  x, w = np.ones((256, 256), np.float32), np.ones((5, 256, 256), np.float32)
  step = lambda a, b: jax.lax.scan(lambda h, wi: (jnp.tanh(h @ wi), None), a, b)[0]  # noqa: E731
  compiled = jax.jit(step).lower(x, w).compile()
  r = compile_report.build(compiled, compile_report.CHIPS["v5e"], devices=1)
  raw = r["compiler_loop_bodies_once"]
  assert raw["flops_per_chip"] == pytest.approx(2 * 256 ** 3, rel=0.01)
  assert r["flops_per_chip"] == pytest.approx(5 * 2 * 256 ** 3, rel=0.01)
  assert r["bytes_accessed_per_chip"] > 2 * raw["bytes_accessed_per_chip"]
