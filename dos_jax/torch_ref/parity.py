r"""JAX vs PyTorch numerics parity: `run_parity(...)`, the report of `python -m launch.parity [--dtype
float32|float64|both] [--json PATH]`.

The same inputs and the same weights go through `dos_jax` (jit) and the eager PyTorch reference
(`dos_jax.torch_ref`); for each component the report gives the max abs and the max relative difference of the
forward output and of the gradients of a fixed random projection sum(out * g) w.r.t. the inputs and the params.
The launcher prints it as one JSON object (also written atomically to --json), exit code 1 when any
difference exceeds its tolerance.

  relative difference = max|jax - torch| / max|torch| over the compared array (norm-relative, as the objective
  tests; param gradients: the largest such ratio over the param leaves, a leaf's denominator floored at 1e-3 x
  the largest gradient so an all-zero leaf is compared in absolute terms).

Components and tolerances (relative; float32 / float64):
  objective/{zipf_prior, zipf_sinkhorn, softmap, softmap_kl, dos_loss, dos_loss_clustering}   1e-5 / 1e-10
  encoder/mlp (Linear, exact GELU, Linear)                                                    1e-5 / 1e-10
  encoder/{layer_norm, cpe, attention, attention_ragged, grid_pooling, embedding, block}      2e-5 / 1e-5
  encoder/encoder (full `tiny` encoder, 3 stages, depths 1-2-1, upcast)                       2e-5 / 1e-5
The float64 bound of the encoder is float32-level BY DESIGN of the Flax model: its LayerNorm (`blocks.LayerNorm`)
and the attention softmax (`jax.nn.dot_product_attention`) compute in float32 whatever the input dtype (mixed
precision), so float64 runs agree with the float64 torch reference only to float32 rounding; the MLP has no such cast and
is held to 1e-10. Measured (CPU, jax 0.10.2, torch 2.13): float32 blocks <= 8e-7, full encoder 2.6e-6 (param
grads); float64 blocks <= 3e-7, full encoder 1e-6, MLP 1e-15; objective 1e-6 (f32) and 2e-15 (f64).

Inputs: objective, one set of N points x K prototypes (cosines / temperature as in training, ~15% padded rows,
B=2 scenes x V=2 views for dos_loss); encoder, two padded point sets (240 and 90 real points in capacity 256, a
heightfield at 0.1 m, 3 stages, patch 64: the second set has fully padded patches, the first a partial last one);
`attention_ragged` uses a capacity (40) that is not a multiple of its patch (16).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np

from dos_jax import variants
from dos_jax.batching import patches
from dos_jax.models import blocks
from dos_jax.models import ptv3

TOLERANCES = {
    "objective": {"float32": 1e-5, "float64": 1e-10},
    "encoder/mlp": {"float32": 1e-5, "float64": 1e-10},
    "encoder": {"float32": 2e-5, "float64": 1e-5},
}
GRID = 0.1


def tolerance(component: str, dtype: str) -> float:
  """The documented relative tolerance of a component ('objective/...' or 'encoder/...')."""
  if component in TOLERANCES:
    return TOLERANCES[component][dtype]
  return TOLERANCES[component.split("/")[0]][dtype]


def _diff(a, b) -> Dict[str, float]:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
  if a.size == 0:
    return {"max_abs": 0.0, "max_rel": 0.0}
  abs_diff = float(np.max(np.abs(a - b)))
  return {"max_abs": abs_diff, "max_rel": abs_diff / max(float(np.max(np.abs(b))), 1e-300)}


def _tree_diff(a, b) -> Dict[str, float]:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  scale = max(float(np.max(np.abs(np.asarray(x, np.float64)))) for x in lb)
  worst = {"max_abs": 0.0, "max_rel": 0.0}
  for x, y in zip(la, lb):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = float(np.max(np.abs(x - y)))
    worst["max_abs"] = max(worst["max_abs"], d)
    worst["max_rel"] = max(worst["max_rel"], d / max(float(np.max(np.abs(y))), 1e-3 * scale, 1e-300))
  return worst


# ----------------------------------------------------------------------------------------------- inputs


def make_points(sizes: Sequence[int] = (240, 90), capacity: int = 256, variant: str = "tiny",
                seed: int = 0, in_channels: int = 9):
  """A batched numpy PointSet: one heightfield set per entry of `sizes` (real points), shared capacity."""
  spec = variants.decode_variant(variant)
  r = np.random.default_rng(seed)
  sets = []
  for n in sizes:
    side = int(np.ceil(np.sqrt(n * 1.5)))
    gx, gy = np.divmod(r.choice(side * side, n, replace=False), side)
    gz = np.round(2 * np.sin(gx / 3.0) + np.cos(gy / 4.0)).astype(np.int64)
    coord = ((np.stack([gx, gy, gz], -1) + 0.5) * GRID).astype(np.float32)
    feat = np.concatenate([coord, r.random((n, in_channels - 3))], 1).astype(np.float32)
    sets.append(patches.build_point_set(coord, feat, np.arange(n), GRID, capacity, len(spec["channels"]),
                                        spec["patch_size"]))
  return patches.stack_point_sets(sets)


def random_params(shapes: Any, seed: int = 0) -> Any:
  """f32 numpy params for a tree of shapes: kernels N(0, 1/fan_in), LayerNorm scales 1 + N(0, 0.1), biases and
  the mask token N(0, 0.1), so that zero biases or unit scales cannot hide a layout bug in the converter."""
  r = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(dict(shapes))
  out = {}
  for path, leaf in flat.items():
    noise = r.standard_normal(leaf.shape)
    if path[-1] == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      out[path] = noise / np.sqrt(fan_in)
    elif path[-1] == "scale":
      out[path] = 1.0 + 0.1 * noise
    else:
      out[path] = 0.1 * noise
    out[path] = out[path].astype(np.float32)
  return flax.traverse_util.unflatten_dict(out)


# ----------------------------------------------------------------------------------------------- objective


def _objective_inputs(dtype, seed=0, n=96, k=32):
  r = np.random.default_rng(seed)
  return dict(
      teacher=(r.uniform(-1, 1, (n, k)) / 0.07).astype(dtype),
      student=(r.uniform(-1, 1, (n, k)) / 0.1).astype(dtype),
      valid=r.random(n) > 0.15,
      cot=r.standard_normal((n, k)).astype(dtype))


def _dos_inputs(dtype, seed=1, b=2, ns=40, nt=48, k=16):
  r = np.random.default_rng(seed)
  student_valid = r.random((b, 2, ns)) > 0.1
  target_valid = student_valid & (r.random((b, 2, ns)) > 0.1)
  cross_valid = student_valid & (r.random((b, 2, ns)) > 0.3)
  return dict(
      student_cos=r.uniform(-1, 1, (b, 2, ns, k)).astype(dtype),
      teacher_cos=r.uniform(-1, 1, (b, 2, nt, k)).astype(dtype),
      target_index=np.where(target_valid, r.integers(0, nt, (b, 2, ns)), nt).astype(np.int32),
      target_valid=target_valid,
      cross_index=np.where(cross_valid, r.integers(0, nt, (b, 2, ns)), nt).astype(np.int32),
      cross_valid=cross_valid, student_valid=student_valid)


def objective_parity(dtype: str, alpha: float = 1.3, num_iters: int = 3) -> Dict[str, Dict[str, Any]]:
  """Objective components, forward and gradients: {component: {check: {max_abs, max_rel}}}."""
  import torch  # pylint: disable=g-import-not-at-top
  from dos_jax import objective  # pylint: disable=g-import-not-at-top
  try:
    from dos_jax.torch_ref import objective as tobj  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # the torch objective reference lands separately
    return {"objective": {"skipped": f"dos_jax.torch_ref.objective unavailable: {e}"}}
  np_dtype = np.dtype(dtype)
  tdt = getattr(torch, dtype)
  x = _objective_inputs(np_dtype)
  t = lambda a, grad=False: torch.tensor(a, dtype=tdt if a.dtype.kind == "f" else None, requires_grad=grad)
  out = {}

  # Everything on the JAX side runs under jit: eager calls would compile every primitive separately.
  out["objective/zipf_prior"] = {"forward": _diff(jax.jit(objective.zipf_prior, static_argnums=0)(64, alpha),
                                                  tobj.zipf_prior(64, alpha, dtype=tdt).numpy())}

  def with_grad(jfn, tfn, args, grad_args):
    """Forward and gradient of sum(out * g) w.r.t. args[i] for i in grad_args (both sides; JAX under jit)."""
    def full(*grad_vals):
      vals = list(args)
      for i, v in zip(grad_args, grad_vals):
        vals[i] = v
      return jfn(*vals)

    @jax.jit
    def run(grad_vals, g):
      j_out, vjp = jax.vjp(full, *grad_vals)
      return j_out, vjp(g)

    grad_vals = [jnp.asarray(args[i]) for i in grad_args]
    shape = jax.eval_shape(full, *grad_vals)
    g = np.random.default_rng(3).standard_normal(shape.shape).astype(np_dtype)
    j_out, j_grads = run(grad_vals, g)
    targs = [t(a, i in grad_args) for i, a in enumerate(args)]
    t_out = tfn(*targs)
    if grad_args:
      (t_out * torch.as_tensor(g)).sum().backward()
    res = {"forward": _diff(j_out, t_out.detach().numpy())}
    for i, gr in zip(grad_args, j_grads):
      res[f"grad_arg{i}"] = _diff(gr, targs[i].grad.numpy())
    return res

  sinkhorn = (lambda s, v: objective.zipf_sinkhorn(s, v, alpha, num_iters),
              lambda s, v: tobj.zipf_sinkhorn(s, v, alpha, num_iters))
  out["objective/zipf_sinkhorn"] = with_grad(*sinkhorn, [x["teacher"], x["valid"]], [])
  # The targets are stop-gradient in training; the gradient through Sinkhorn is still compared, on a set without
  # padded rows (the torch reference's masked log-sum-exp of all -inf rows has NaN gradients).
  out["objective/zipf_sinkhorn"]["grad_arg0_unpadded"] = with_grad(
      *sinkhorn, [x["teacher"], np.ones_like(x["valid"])], [0])["grad_arg0"]
  out["objective/softmap"] = with_grad(objective.softmap, tobj.softmap, [x["student"], x["valid"]], [0])
  target = np.asarray(jax.jit(sinkhorn[0])(x["teacher"], x["valid"])).astype(np_dtype)
  out["objective/softmap_kl"] = with_grad(objective.softmap_kl, tobj.softmap_kl,
                                          [target, x["student"], x["valid"]], [1])

  d = _dos_inputs(np_dtype)
  names = ["student_cos", "teacher_cos", "target_index", "target_valid", "cross_index", "cross_valid",
           "student_valid"]
  for norm in ("softmap", "clustering"):
    kw = dict(teacher_temp=0.07, student_temp=0.1, alpha=alpha, num_iters=num_iters, normalization=norm,
              cross_view=True)
    key = "objective/dos_loss" + ("" if norm == "softmap" else "_clustering")
    out[key] = with_grad(lambda *a: objective.dos_loss(*a, **kw)[0], lambda *a: tobj.dos_loss(*a, **kw)[0],
                         [d[n] for n in names], [0])
  return out


# ----------------------------------------------------------------------------------------------- encoder


def _module_parity(module, fwd: Callable, tmodule, tfwd: Callable, prefix: str, x, ctx, dtype: str,
                   seed: int) -> Dict[str, Any]:
  """Forward, d/dx and d/dparams of sum(out * g) for one Flax module vs its torch twin (params converted).

  `fwd(bound_module, x, ctx)` and `tfwd(torch_module, x, ctx)` call the two modules; `prefix` is the module's
  Flax path inside the encoder (for the torch names). Params: `random_params` of the Flax shapes.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from dos_jax.torch_ref import convert  # pylint: disable=g-import-not-at-top
  from dos_jax.torch_ref import encoder as tenc  # pylint: disable=g-import-not-at-top
  np_dtype, tdt = np.dtype(dtype), getattr(torch, dtype)
  x = np.asarray(x, np_dtype)
  ctx_j = jax.tree.map(jnp.asarray, ctx)
  # Shapes from an abstract init (no compile), values drawn in numpy.
  shapes = jax.eval_shape(lambda k, xx, c: module.init(k, xx, c, method=fwd), jax.random.key(seed), x, ctx_j)
  params = jax.tree.map(lambda a: np.asarray(a, np_dtype), random_params(shapes["params"], seed))

  def call(p, xx, c):
    return module.apply({"params": p}, xx, c, method=fwd)

  @jax.jit
  def run(p, xx, c, g):
    out, vjp = jax.vjp(lambda p_, x_: call(p_, x_, c), p, xx)
    return out, vjp(g)

  out_shape = jax.eval_shape(call, params, x, ctx_j)
  # The encoder casts its output to float32 whatever the compute dtype: the cotangent follows the output.
  g = np.random.default_rng(seed + 7).standard_normal(out_shape.shape).astype(out_shape.dtype)
  j_out, (j_gp, j_gx) = run(params, x, ctx_j, g)

  tmodule = tmodule.to(tdt)
  tmodule.load_state_dict(convert.flax_to_torch_state_dict(params, prefix=prefix, dtype=tdt), strict=True)
  tx = torch.tensor(x, requires_grad=True)
  t_out = tfwd(tmodule, tx, tenc.points_to_torch(ctx, tdt))
  (t_out * torch.from_numpy(g)).sum().backward()
  grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in tmodule.named_parameters()}
  t_gp = convert.torch_state_dict_to_flax(grads, like=params, prefix=prefix)
  return {"forward": _diff(j_out, t_out.detach().numpy()), "grad_input": _diff(j_gx, tx.grad.numpy()),
          "grad_params": _tree_diff(flax.traverse_util.flatten_dict(j_gp), flax.traverse_util.flatten_dict(t_gp))}


def _ragged_order(n: int, n_valid: Sequence[int], seed: int):
  """valid bool[B, n], order/inverse int32[B, n] with the real slots first in a random order (contract)."""
  r = np.random.default_rng(seed)
  valid = np.zeros((len(n_valid), n), bool)
  order = np.zeros((len(n_valid), n), np.int32)
  for b, m in enumerate(n_valid):
    slots = r.permutation(n)
    valid[b, slots[:m]] = True
    order[b] = np.concatenate([slots[:m], np.sort(slots[m:])])
  return valid, order, np.argsort(order, axis=1).astype(np.int32)


def encoder_parity(dtype: str, seed: int = 0) -> Dict[str, Dict[str, Any]]:
  """Encoder blocks and the full tiny encoder, forward and gradients: {component: {check: {max_abs, max_rel}}}."""
  from dos_jax.torch_ref import blocks as tblocks  # pylint: disable=g-import-not-at-top
  from dos_jax.torch_ref import encoder as tenc  # pylint: disable=g-import-not-at-top
  jdt = jnp.dtype(dtype)
  spec = variants.decode_variant("tiny")
  points = make_points(seed=seed)
  s0, s1 = points.stages[0], points.stages[1]
  c0, c1, h0 = spec["channels"][0], spec["channels"][1], spec["heads"][0]
  r = np.random.default_rng(seed)
  x0 = np.where(s0.valid[..., None], r.standard_normal(s0.valid.shape + (c0,)), 0.0)
  out = {}

  def check(name, module, call, tmodule, tcall, prefix, x, ctx):
    out[f"encoder/{name}"] = _module_parity(module, call, tmodule, tcall, prefix, x, ctx, dtype, seed)

  check("layer_norm", blocks.LayerNorm(jdt), lambda m, x, c: m(x), tblocks.layer_norm(c0),
        lambda m, x, c: m(x), "enc0/block0/norm1", 3.0 * x0 + 1.0, {})
  check("mlp", blocks.MLP(c0, 4.0, jdt), lambda m, x, c: m(x), tblocks.MLP(c0, 4.0), lambda m, x, c: m(x),
        "enc0/block0/mlp", x0, {})
  check("cpe", blocks.CPE(c0, jdt), lambda m, x, c: m(x, c["nb"]), tblocks.CPE(c0),
        lambda m, x, c: m(x, c["nb"]), "enc0/block0/cpe", x0, {"nb": s0.neighbors})
  attn = lambda m, x, c: m(x, c["valid"], c["order"], c["inverse"])
  check("attention", blocks.SerializedAttention(c0, 2 * h0, spec["patch_size"], jdt), attn,
        tblocks.SerializedAttention(c0, 2 * h0, spec["patch_size"]), attn, "enc0/block0/attn", x0,
        {"valid": s0.valid, "order": s0.order[:, 2], "inverse": s0.inverse[:, 2]})
  valid, order, inverse = _ragged_order(40, (33, 9), seed)
  xr = np.where(valid[..., None], r.standard_normal((2, 40, c0)), 0.0)
  check("attention_ragged", blocks.SerializedAttention(c0, 2, 16, jdt), attn,
        tblocks.SerializedAttention(c0, 2, 16), attn, "enc0/block0/attn", xr,
        {"valid": valid, "order": order, "inverse": inverse})
  pool = lambda m, x, c: m(x, c["parent"], c["next_valid"])
  check("grid_pooling", blocks.GridPooling(c1, jdt), pool, tblocks.GridPooling(c0, c1), pool, "enc1/down", x0,
        {"parent": points.parent[0], "next_valid": s1.valid})
  emb = lambda m, x, c: m(x, c["valid"], c["mask"])
  check("embedding", blocks.Embedding(c0, jdt), emb, tblocks.Embedding(points.feat.shape[-1], c0), emb,
        "embedding", points.feat, {"valid": s0.valid, "mask": s0.valid & (r.random(s0.valid.shape) < 0.3)})
  check("block", blocks.Block(c0, 2 * h0, spec["patch_size"], order_index=1, dtype=jdt),
        lambda m, x, c: m(x, c, False), tblocks.Block(c0, 2 * h0, spec["patch_size"], order_index=1),
        lambda m, x, c: m(x, c), "enc0/block0", x0, s0)
  # Depth 2 at stage 1 so that two serialization orders and a block after pooling are covered.
  depths = (1, 2, 1)
  model = ptv3.PointTransformerV3(channels=spec["channels"], depths=depths, heads=spec["heads"],
                                  patch_size=spec["patch_size"], dtype=jdt)
  tmodel = tenc.PointTransformerV3(points.feat.shape[-1], spec["channels"], depths, spec["heads"],
                                   spec["patch_size"])
  check("encoder", model, lambda m, x, c: m(c.replace(feat=x), train=False)[0], tmodel,
        lambda m, x, c: m(c.replace(feat=x)), "", points.feat, points)
  return out


# ----------------------------------------------------------------------------------------------- report


def run_parity(dtypes: Sequence[str] = ("float32", "float64"), *, components: Sequence[str] = ("objective",
                                                                                                 "encoder"),
               seed: int = 0) -> Dict[str, Any]:
  """Runs the comparisons; returns the report {ok, failures, tolerances, results: {dtype: {component: ...}}}.

  Each check is {max_abs, max_rel, tol, ok}; a component skipped for a missing dependency has {skipped: why}.
  """
  import torch  # pylint: disable=g-import-not-at-top
  results, failures = {}, []
  for dtype in dtypes:
    if dtype not in ("float32", "float64"):
      raise ValueError(f"--dtype {dtype!r}: expected float32, float64 or both")
    # float64 needs jax_enable_x64; the float32 run keeps it off so it is the plain float32 program.
    with jax.enable_x64(dtype == "float64"), torch.random.fork_rng():
      torch.manual_seed(seed)
      per = {}
      if "objective" in components:
        per.update(objective_parity(dtype))
      if "encoder" in components:
        per.update(encoder_parity(dtype, seed))
    for comp, checks in per.items():
      if "skipped" in checks:
        continue
      tol = tolerance(comp, dtype)
      for name, d in checks.items():
        d["tol"] = tol
        d["ok"] = bool(np.isfinite(d["max_rel"]) and d["max_rel"] <= tol)
        if not d["ok"]:
          failures.append(f"{dtype}:{comp}:{name} rel {d['max_rel']:.3g} > {tol:g}")
    results[dtype] = per
  return {"ok": not failures, "failures": failures,
          "relative": "max|jax - torch| / max|torch| per array (param grads: worst leaf)",
          "tolerances": TOLERANCES, "jax": jax.__version__, "torch": torch.__version__, "results": results}


def summary_lines(report: Dict[str, Any]) -> Sequence[str]:
  """One human-readable line per (dtype, component): worst relative difference vs tolerance."""
  lines = []
  for dtype, per in report["results"].items():
    for comp, checks in per.items():
      if "skipped" in checks:
        lines.append(f"{dtype:8s} {comp:32s} skipped: {checks['skipped']}")
        continue
      worst = max(checks.items(), key=lambda kv: kv[1]["max_rel"] / kv[1]["tol"])
      flag = "ok  " if all(c["ok"] for c in checks.values()) else "FAIL"
      lines.append(f"{dtype:8s} {comp:32s} {flag} worst {worst[0]:12s} rel {worst[1]['max_rel']:.2e} "
                   f"(tol {worst[1]['tol']:.0e})")
  return lines
