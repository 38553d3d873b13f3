"""dos_jax.compile_report: HLO op counts, roofline arithmetic, memory totals and the fits decision (no libtpu)."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import compile_report

# A hand-written TPU-style HLO module: tuple types, tiled layouts with `T(8,128)` / `S(1)` (upper-case, not
# opcodes), an async all-reduce pair, a fused computation holding a gather, `ROOT` lines and metadata.
_HLO = """\
HloModule jit_train_step, entry_computation_layout={(f32[8,128]{1,0:T(8,128)})->f32[8,128]{1,0}}

%fused_computation (param_0: f32[8,128], param_1: s32[4,1]) -> f32[4,128] {
  %param_0 = f32[8,128]{1,0:T(8,128)} parameter(0)
  %param_1 = s32[4,1]{1,0} parameter(1)
  ROOT %gather.3 = f32[4,128]{1,0:T(4,128)S(1)} gather(%param_0, %param_1), offset_dims={1}, metadata={op_name="jit(f)/gather"}
}

%body (p: (s32[], f32[8])) -> (s32[], f32[8]) {
  %p = (s32[], f32[8]{0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %sort.1 = f32[8]{0} sort(f32[8]{0} %x), dimensions={0}, to_apply=%cmp
  ROOT %t = (s32[], f32[8]{0}) tuple(%i, %sort.1)
}

ENTRY %main.5 (Arg_0.1: f32[8,128]) -> f32[8,128] {
  %Arg_0.1 = f32[8,128]{1,0:T(8,128)} parameter(0), sharding={replicated}
  %all-reduce-start = f32[8,128]{1,0:T(8,128)} all-reduce-start(%Arg_0.1), replica_groups={{0,1}}, to_apply=%add
  %all-reduce-done = f32[8,128]{1,0:T(8,128)} all-reduce-done(%all-reduce-start)
  %all-gather.2 = f32[16,128]{1,0} all-gather(%all-reduce-done), dimensions={0}
  %fusion.7 = f32[4,128]{1,0:T(4,128)} fusion(%Arg_0.1, %idx), kind=kLoop, calls=%fused_computation
  %scatter.9 = f32[8,128]{1,0} scatter(%Arg_0.1, %idx, %fusion.7), to_apply=%add
  %w = (s32[], f32[8]{0}) while(%init), condition=%cond, body=%body
  %cc = (f32[8]{0}, u32[]) custom-call(%Arg_0.1), custom_call_target="ConcatBitcast"
  ROOT %copy = f32[8,128]{1,0} copy(%scatter.9)
}
"""


def test_opcode_counts_of_a_written_module():
  c = compile_report.opcode_counts(_HLO)
  assert c["all-reduce"] == 1 and "all-reduce-done" not in c and "all-reduce-start" not in c
  assert (c["gather"], c["scatter"], c["sort"], c["while"], c["custom-call"], c["fusion"]) == (1, 1, 1, 1, 1, 1)
  assert c["parameter"] == 4 and c["all-gather"] == 1 and c["tuple"] == 1
  assert "T" not in c and "S" not in c and "f32" not in c
  s = compile_report.op_summary(_HLO)
  assert (s["collectives"], s["gathers"], s["scatters"], s["sorts"], s["while_loops"]) == (2, 1, 1, 1, 1)
  assert s["all_reduce"] == 1 and s["all_gather"] == 1 and "reduce_scatter" not in s


def test_opcode_counts_of_a_cpu_compile():
  """Ops the program must contain (one gather, one scatter, one sort, one while loop) are found in XLA's own
  text; a program without them counts none."""

  def f(x, i):
    y = x[i]                                     # gather
    z = jnp.zeros_like(x).at[i].add(y)           # scatter
    s = jnp.sort(x)
    w = jax.lax.fori_loop(0, x.shape[0], lambda k, a: a * 1.5 + s[k], jnp.float32(0))  # while (dynamic trip)
    return z + w

  x, i = jnp.arange(64, dtype=jnp.float32)[::-1], jnp.array([3, 1, 7])
  text = jax.jit(f).lower(x, i).compile().as_text()
  s = compile_report.op_summary(text)
  assert s["gathers"] >= 1 and s["scatters"] >= 1 and s["sorts"] >= 1 and s["while_loops"] >= 1
  plain = compile_report.op_summary(jax.jit(lambda a: a * 2 + 1).lower(x).compile().as_text())
  assert (plain["gathers"], plain["scatters"], plain["sorts"], plain["while_loops"], plain["collectives"]) == (
      0, 0, 0, 0, 0)


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


def test_build_reads_a_real_cpu_compile():
  """memory_analysis / cost_analysis of an actual XLA compile go through unchanged (per device, 1 device/chip)."""
  x = np.ones((256, 256), np.float32)
  compiled = jax.jit(lambda a: a @ a).lower(x).compile()
  r = compile_report.build(compiled, compile_report.CHIPS["v5e"], devices=1)
  assert r["flops_per_chip"] == pytest.approx(2 * 256 ** 3, rel=0.01)
  assert r["memory_per_chip"]["argument"] == x.nbytes and r["memory_per_chip"]["output"] == x.nbytes
  assert r["fits"] and r["ops"]["gathers"] == 0


# Two convolutions as the TPU compiler writes matmuls (from the scannet base step): the CPE's gathered
# neighbourhood times its kernel (a window of 48 over a spatial extent of 48: contraction 27 x 48), and the
# transpose of that gather-then-matmul (a window of 27 over an extent of 1, padded: one tap really reads input).
_CONV_HLO = """\
HloModule m

%fused (p0: bf16[2240,384], p1: f32[27,384,384]) -> f32[2240,27,384] {
  %p0 = bf16[2240,384]{1,0:T(8,128)(2,1)S(1)} parameter(0)
  %b = bf16[2240,384,1]{1,0,2:T(8,128)(2,1)} bitcast(%p0)
  %p1 = f32[27,384,384]{2,1,0:T(8,128)S(1)} parameter(1)
  ROOT %convolution.2 = f32[2240,27,384]{2,0,1:T(8,128)} convolution(%b, %p1), window={size=27 pad=26_26 rhs_reversal=1}, dim_labels=bf0_0oi->b0f, metadata={op_name="jit(train_step)/transpose(jvp(PointTransformerV3))/enc3/block11/cpe/conv/dot_general"}
}

ENTRY %main (a: bf16[43784,27,48], k: bf16[27,48,48], x: f32[8,64], w: f32[64,32], g: bf16[2240,384], kk: f32[27,384,384]) -> f32[43784,48,1] {
  %a = bf16[43784,27,48]{1,0,2:T(8,128)(2,1)} parameter(0)
  %k = bf16[27,48,48]{2,0,1:T(8,128)(2,1)} parameter(1)
  %x = f32[8,64]{1,0} parameter(2)
  %w = f32[64,32]{1,0} parameter(3)
  %g = bf16[2240,384]{1,0} parameter(4)
  %kk = f32[27,384,384]{2,1,0} parameter(5)
  %dot.1 = f32[8,32]{1,0} dot(%x, %w), lhs_contracting_dims={1}, rhs_contracting_dims={0}
  %fusion.1 = f32[2240,27,384]{2,0,1} fusion(%g, %kk), kind=kOutput, calls=%fused
  ROOT %convolution.1 = f32[43784,48,1]{0,1,2:T(8,128)} convolution(%a, %k), window={size=48}, dim_labels=bf0_i0o->bf0, metadata={op_name="jit(train_step)/jvp(PointTransformerV3)/enc0/block0/cpe/conv/dot_general"}
}
"""


def test_instruction_flops_of_dots_and_tpu_convolutions():
  rows = {r["name"]: r for r in compile_report.instruction_costs(_CONV_HLO)}
  assert rows["dot.1"]["flops"] == 2 * 8 * 32 * 64
  assert rows["convolution.1"]["flops"] == 2 * (43784 * 48) * (27 * 48)
  assert rows["fusion.1"]["flops"] == 2 * (2240 * 27 * 384) * 384  # not x 27: the window reads padding
  # bytes: output plus operands, each once (bf16 2 bytes, f32 4)
  assert rows["convolution.1"]["bytes"] == 43784 * 48 * 4 + 43784 * 27 * 48 * 2 + 27 * 48 * 48 * 2
  assert rows["convolution.1"]["op_name"].endswith("enc0/block0/cpe/conv/dot_general")


def test_refused_report_reads_the_compilers_numbers():
  msg = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (40.91G) "
         "exceeds available HBM (15.75G).")
  r = compile_report.refused(RuntimeError(msg), compile_report.chip_spec("v5e:2x2"), "configs/x.py", "v5e:2x2")
  assert r["fits"] is False and r["chip"]["name"] == "v5e" and r["compiler"] == msg
  assert r["required_temp_bytes"] == int(40.91 * 2**30) and r["available_bytes"] == int(15.75 * 2**30)
  r = compile_report.refused(RuntimeError("RESOURCE_EXHAUSTED: other wording"), compile_report.chip_spec("v5p:2x2x1"),
                             "c", "v5p:2x2x1")
  assert "required_temp_bytes" not in r and r["fits"] is False


_SPACES_HLO = """\
HloModule spaces

%fused (p0: f32[4096,1024], p1: f32[1024,1024]) -> bf16[4096,1024] {
  %p0 = f32[4096,1024]{1,0} parameter(0)
  %p1 = f32[1024,1024]{1,0} parameter(1)
  ROOT %d = bf16[4096,1024]{1,0} convert(%p0)
}

ENTRY %main (x: f32[4096,1024], w: f32[1024,1024], k: f32[27,384,384]) -> f32[] {
  %w = f32[1024,1024]{1,0:T(8,128)} parameter(1)
  %x = f32[4096,1024]{1,0:T(8,128)} parameter(0)
  %k = f32[27,384,384]{2,1,0:T(8,128)} parameter(2)
  %copy-start = (f32[1024,1024]{1,0:T(8,128)S(1)}, f32[1024,1024]{1,0:T(8,128)}, u32[]{:S(2)}) copy-start(%w)
  %copy-done = f32[1024,1024]{1,0:T(8,128)S(1)} copy-done(%copy-start)
  %slice-start = ((f32[27,384,384]{2,1,0:T(8,128)}), f32[7,384,384]{2,1,0:T(8,128)S(1)}, s32[]{:S(2)}) slice-start(%k), slice={[0:7], [0:384], [0:384]}
  %slice-done = f32[7,384,384]{2,1,0:T(8,128)S(1)} slice-done(%slice-start)
  %fusion.2 = bf16[4096,1024]{1,0:T(8,128)(2,1)S(1)} fusion(%x, %copy-done), kind=kOutput, calls=%fused, backend_config={"flag_configs":[],"window_config":{"estimated_cycles":"101624","iteration_bounds":["1","6","1"]}}
  ROOT %fusion.1 = f32[]{:T(128)} fusion(%x, %fusion.2, %slice-done), kind=kLoop, calls=%fused, backend_config={"window_config":{"estimated_cycles":"9223372036854775807"}}
}
"""


def test_instruction_hbm_bytes_follow_memory_spaces_and_transfers():
  """HBM bytes skip arrays placed in VMEM (S(1)); a copy/slice into VMEM counts the array it moves once (a slice
  only its part, not the whole source), its -done nothing; cycles are the compiler's per-kernel estimate."""
  rows = {r["name"]: r for r in compile_report.instruction_costs(_SPACES_HLO)}
  x, w, part = 4096 * 1024 * 4, 1024 * 1024 * 4, 7 * 384 * 384 * 4
  assert rows["copy-start"]["hbm_bytes"] == w and rows["copy-done"]["hbm_bytes"] == 0
  assert rows["slice-start"]["hbm_bytes"] == part and rows["slice-done"]["hbm_bytes"] == 0
  assert rows["slice-start"]["bytes"] == 2 * part  # read from HBM, written to VMEM
  # fusion.2 reads x from HBM; w (copied) and its bf16 output live in VMEM
  assert rows["fusion.2"]["hbm_bytes"] == x
  assert rows["fusion.2"]["bytes"] == x + w + 4096 * 1024 * 2
  assert rows["fusion.1"]["hbm_bytes"] == x + 4  # the f32[] result has no memory space: HBM
  assert rows["fusion.2"]["cycles"] == 101624
  assert rows["fusion.1"]["cycles"] == 0  # int64 max: the compiler's "unknown" (v5p programs carry it), not a cost
