"""dos_jax.hlo_costs: opcode counts and per-kernel bytes, HBM bytes, flops, cycles and loop trip counts of
hand-written TPU-style HLO and of real CPU compiles."""

import jax
import jax.numpy as jnp
import numpy as np

from dos_jax import hlo_costs

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
  c = hlo_costs.opcode_counts(_HLO)
  assert c["all-reduce"] == 1 and "all-reduce-done" not in c and "all-reduce-start" not in c
  assert (c["gather"], c["scatter"], c["sort"], c["while"], c["custom-call"], c["fusion"]) == (1, 1, 1, 1, 1, 1)
  assert c["parameter"] == 4 and c["all-gather"] == 1 and c["tuple"] == 1
  assert "T" not in c and "S" not in c and "f32" not in c
  s = hlo_costs.op_summary(_HLO)
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
  s = hlo_costs.op_summary(text)
  assert s["gathers"] >= 1 and s["scatters"] >= 1 and s["sorts"] >= 1 and s["while_loops"] >= 1
  plain = hlo_costs.op_summary(jax.jit(lambda a: a * 2 + 1).lower(x).compile().as_text())
  assert (plain["gathers"], plain["scatters"], plain["sorts"], plain["while_loops"], plain["collectives"]) == (
      0, 0, 0, 0, 0)


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
  rows = {r["name"]: r for r in hlo_costs.instruction_costs(_CONV_HLO)}
  assert rows["dot.1"]["flops"] == 2 * 8 * 32 * 64
  assert rows["convolution.1"]["flops"] == 2 * (43784 * 48) * (27 * 48)
  assert rows["fusion.1"]["flops"] == 2 * (2240 * 27 * 384) * 384  # not x 27: the window reads padding
  # bytes: output plus operands, each once (bf16 2 bytes, f32 4)
  assert rows["convolution.1"]["bytes"] == 43784 * 48 * 4 + 43784 * 27 * 48 * 2 + 27 * 48 * 48 * 2
  assert rows["convolution.1"]["op_name"].endswith("enc0/block0/cpe/conv/dot_general")


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
  rows = {r["name"]: r for r in hlo_costs.instruction_costs(_SPACES_HLO)}
  x, w, part = 4096 * 1024 * 4, 1024 * 1024 * 4, 7 * 384 * 384 * 4
  assert rows["copy-start"]["hbm_bytes"] == w and rows["copy-done"]["hbm_bytes"] == 0
  assert rows["slice-start"]["hbm_bytes"] == part and rows["slice-done"]["hbm_bytes"] == 0
  assert rows["slice-start"]["bytes"] == 2 * part  # read from HBM, written to VMEM
  # fusion.2 reads x from HBM; w (copied) and its bf16 output live in VMEM
  assert rows["fusion.2"]["hbm_bytes"] == x
  assert rows["fusion.2"]["bytes"] == x + w + 4096 * 1024 * 2
  assert rows["fusion.1"]["hbm_bytes"] == x + 4  # the f32[] result has no memory space: HBM
  assert rows["slice-start"]["hbm_tiled_bytes"] == part and rows["fusion.1"]["hbm_tiled_bytes"] == x + 4
  assert rows["fusion.2"]["cycles"] == 101624
  assert rows["fusion.1"]["cycles"] == 0  # int64 max: the compiler's "unknown" (v5p programs carry it), not a cost


def test_tiled_bytes_pad_the_minor_dims_to_the_first_tile():
  # bf16 [100, 48] in (8, 128) tiles: rows to 104, lanes to 128; the (2, 1) sub-tile adds nothing.
  assert hlo_costs.tiled_bytes("bf16", "100,48", "{1,0:T(8,128)(2,1)}") == 104 * 128 * 2
  # minor-to-major {1,2,0}: axis 1 is the most minor (to 128), axis 2 next (to 2).
  assert hlo_costs.tiled_bytes("s32", "1,1000,2", "{1,2,0:T(2,128)}") == 1 * 1024 * 2 * 4
  assert hlo_costs.tiled_bytes("s32", "1000", "{0:T(1024)S(1)}") == 1024 * 4
  assert hlo_costs.tiled_bytes("f32", "", "{:T(128)}") == 4  # a scalar: no axis to pad
  assert hlo_costs.tiled_bytes("f32", "3,5", "") == 3 * 5 * 4  # no layout: logical bytes
  assert hlo_costs.tiled_bytes("f32", "4096,1024", "{1,0:T(8,128)}") == 4096 * 1024 * 4  # already whole tiles


def test_instruction_hbm_tiled_bytes_count_hbm_arrays_at_their_tiled_size():
  hlo = """\
HloModule t

ENTRY %main (x: bf16[100,48]) -> bf16[100,48] {
  %x = bf16[100,48]{1,0:T(8,128)(2,1)} parameter(0)
  %v = bf16[100,48]{1,0:T(8,128)(2,1)S(1)} negate(%x)
  ROOT %y = bf16[100,48]{1,0:T(8,128)(2,1)} negate(%v)
}
"""
  rows = {r["name"]: r for r in hlo_costs.instruction_costs(hlo)}
  tile = 104 * 128 * 2
  assert rows["v"]["hbm_bytes"] == 100 * 48 * 2 and rows["v"]["hbm_tiled_bytes"] == tile  # its output is in VMEM
  assert rows["y"]["hbm_bytes"] == 100 * 48 * 2 and rows["y"]["hbm_tiled_bytes"] == tile
  totals = hlo_costs.parsed_totals(list(rows.values()))
  assert totals["hbm_tiled_bytes"] == 2 * tile and totals["hbm_bytes"] == 2 * 100 * 48 * 2


# While loops as the TPU compiler writes lax.scan (no recorded trip count: the condition's root compares the
# counter with a constant, bare or wrapped in a fusion) and as the CPU compiler does (`known_trip_count`).
_STATE = "(s32[], f32[8,64]{1,0}, f32[64,32]{1,0})"


def _loop_body(tag, extra=""):
  """A while body `%body_<tag>` that runs one matmul kernel `%fusion.<tag>` (then `extra` lines)."""
  return f"""%body_{tag} (p{tag}: (s32[], f32[8,64], f32[64,32])) -> (s32[], f32[8,64], f32[64,32]) {{
  %p{tag} = {_STATE} parameter(0)
  %x{tag} = f32[8,64]{{1,0}} get-tuple-element(%p{tag}), index=1
  %w{tag} = f32[64,32]{{1,0}} get-tuple-element(%p{tag}), index=2
  %fusion.{tag} = f32[8,32]{{1,0}} fusion(%x{tag}, %w{tag}), kind=kOutput, calls=%fused_dot{extra}
  ROOT %t{tag} = {_STATE} tuple(%i{tag}, %x{tag}, %w{tag})
}}
"""


_LOOP_HLO = f"""\
HloModule loops

%fused_dot (p0: f32[8,64], p1: f32[64,32]) -> f32[8,32] {{
  %p0 = f32[8,64]{{1,0}} parameter(0)
  %p1 = f32[64,32]{{1,0}} parameter(1)
  ROOT %d = f32[8,32]{{1,0}} dot(%p0, %p1), lhs_contracting_dims={{1}}, rhs_contracting_dims={{0}}
}}

{_loop_body("a", ', backend_config={"window_config":{"estimated_cycles":"100"}}')}
%cond_a (ca: (s32[], f32[8,64], f32[64,32])) -> pred[] {{
  %ca = {_STATE} parameter(0)
  %constant.12 = s32[]{{:T(128)}} constant(12)
  %ga = s32[]{{:T(128)}} get-tuple-element(%ca), index=0
  ROOT %lt.1 = pred[]{{:T(512)}} compare(%ga, %constant.12), direction=LT
}}

{_loop_body("b", chr(10) + f"  %inner = {_STATE} while(%pb), condition=%cond_in, body=%body_c")}
%wrapped_lt (l: s32[], r: s32[]) -> pred[] {{
  %l = s32[] parameter(0)
  %r = s32[] parameter(1)
  ROOT %lt.2 = pred[] compare(%l, %r), direction=LT
}}

%cond_b (cb: (s32[], f32[8,64], f32[64,32])) -> pred[] {{
  %cb = {_STATE} parameter(0)
  %constant.3 = s32[] constant(3)
  %gb = s32[] get-tuple-element(%cb), index=0
  ROOT %wrapped_compare = pred[] fusion(%gb, %constant.3), kind=kLoop, calls=%wrapped_lt
}}

{_loop_body("c")}
%cond_in (ci: (s32[], f32[8,64], f32[64,32])) -> pred[] {{
  %ci = {_STATE} parameter(0)
  %constant.4 = s32[] constant(4)
  %gi = s32[] get-tuple-element(%ci), index=0
  ROOT %lt.4 = pred[] compare(%gi, %constant.4), direction=LT
}}

{_loop_body("f")}
%cond_c (cc: (s32[], f32[8,64], f32[64,32])) -> pred[] {{
  %cc = {_STATE} parameter(0)
  %gc = s32[] get-tuple-element(%cc), index=0
  ROOT %ne = pred[] compare(%gc, %gc), direction=NE
}}

{_loop_body("d")}
ENTRY %main (x: f32[8,64], w: f32[64,32]) -> f32[8,32] {{
  %x = f32[8,64]{{1,0}} parameter(0)
  %w = f32[64,32]{{1,0}} parameter(1)
  %loop_a = {_STATE} while(%init), condition=%cond_a, body=%body_a
  %loop_b = {_STATE} while(%init), condition=%cond_b, body=%body_b
  %loop_d = {_STATE} while(%init), condition=%cond_x, body=%body_d, backend_config={{"known_induction_variable":{{"tuple_index":"0"}},"known_trip_count":{{"n":"5"}}}}
  %loop_f = {_STATE} while(%init), condition=%cond_c, body=%body_f
  ROOT %fusion.e = f32[8,32]{{1,0}} fusion(%x, %w), kind=kOutput, calls=%fused_dot
}}
"""


def test_loop_bodies_count_once_per_iteration():
  """A kernel in a while body runs trip-count times per step: the count comes from the condition's `i < N`
  (bare or fused, TPU) or XLA's known_trip_count (CPU); nested loops multiply; a condition of another form
  counts once. Its bytes, flops and cycles are per step."""
  rows = {r["name"]: r for r in hlo_costs.instruction_costs(_LOOP_HLO)}
  dot_flops = 2 * 8 * 32 * 64
  names = ("fusion.a", "fusion.b", "fusion.c", "fusion.d", "fusion.e", "fusion.f")
  assert {n: rows[n]["runs"] for n in names} == {
      "fusion.a": 12, "fusion.b": 3, "fusion.c": 3 * 4, "fusion.d": 5, "fusion.e": 1, "fusion.f": 1}
  assert rows["fusion.a"]["flops"] == 12 * dot_flops and rows["fusion.e"]["flops"] == dot_flops
  assert rows["fusion.a"]["cycles"] == 12 * 100
  assert rows["fusion.a"]["bytes"] == 12 * 4 * (8 * 32 + 8 * 64 + 64 * 32)
