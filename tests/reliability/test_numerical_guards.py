"""Numerical guards: the objective stays finite and correct at extreme logits, and the train step skips and
counts a non-finite step without touching the params.

What is asserted (against independent float64 NumPy implementations of the DESIGN.md procedures):
  * zipf_sinkhorn for α in {0, 1, 2, 3} on logits up to ±100: random, one-hot-extreme rows (+100 on one
    prototype, -100 elsewhere; all rows on one prototype or spread), all-equal entries, equal-within-row rows, a
    single valid point among padding, a one-point set, and padded rows holding ±100 / far larger values: finite,
    every column a distribution over the valid points, padded rows exactly 0, equal to the reference;
  * softmap / softmap_kl at ±100 logits and with 1-2 valid points: finite values and gradients, columns sum to 1,
    KL >= 0 and equal to the reference, gradient equal to the analytic (P Σ_i T - T) / K, an empty set gives 0;
    the fused `zipf_softmap_kl` (what dos_loss runs) equals the composition in value and gradient, per case;
  * garbage (±1e6, NaN, ±inf) in padded rows leaves every output and gradient unchanged (DESIGN.md: Q starts
    from exp(scores) on the valid rows only, so padded values cannot matter, whatever they are);
  * train_step: a NaN (or inf) in the batch features skips the step: metrics['nonfinite'] = 1,
    nonfinite_count + 1, params / teacher / optimizer state bitwise unchanged, step + 1; a clean batch updates.
The loop's nonfinite='stop' policy (NonFiniteError naming the step) is tested end to end in tests/train/test_loop.py.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dos_jax import objective
from dos_jax import specs
from dos_jax.batching import spec as spec_lib

N, K = 12, 8
ALPHAS = (0.0, 1.0, 2.0, 3.0)


# ----------------------------------------------------------------------------------- float64 references


def np_zipf_prior(k, alpha):
  w = np.arange(1, k + 1, dtype=np.float64) ** -alpha
  return w / w.sum()


def np_zipf_sinkhorn(scores, valid, alpha, num_iters=3):
  """DESIGN.md: Q = exp(scores) on valid rows (total mass 1); `num_iters` x (rows -> 1/N, columns -> w_k);
  then every column to sum 1. Plain float64 (exp(±200) is representable)."""
  s = np.asarray(scores, np.float64)[valid]
  out = np.zeros(scores.shape, np.float64)
  q = np.exp(s - s.max())
  q /= q.sum()
  w = np_zipf_prior(s.shape[1], alpha)
  for _ in range(num_iters):
    q *= (1.0 / len(s)) / q.sum(1, keepdims=True)
    q *= w / q.sum(0, keepdims=True)
  q /= q.sum(0, keepdims=True)
  out[valid] = q
  return out


def np_softmap(scores, valid):
  s = np.asarray(scores, np.float64)
  out = np.zeros(s.shape)
  e = np.exp(s[valid] - s[valid].max(0))
  out[valid] = e / e.sum(0)
  return out


def np_softmap_kl(target, scores, valid):
  """(1/K) Σ_k KL(T_k || P_k) and its gradient in the student scores, (1/K) (P Σ_i T - T)."""
  t = np.asarray(target, np.float64)[valid]
  p = np_softmap(scores, valid)[valid]
  with np.errstate(divide="ignore", invalid="ignore"):
    kl = np.where(t > 0, t * (np.log(t) - np.log(p)), 0.0).sum() / t.shape[1]
  grad = np.zeros(scores.shape)
  grad[valid] = (p * t.sum(0, keepdims=True) - t) / t.shape[1]
  return kl, grad


# ------------------------------------------------------------------------------------------------- cases


def _cases():
  """{name: (scores f32[N, K], valid bool[N])}: the extreme inputs, all of one shape (one compile)."""
  rng = np.random.default_rng(0)
  all_valid = np.ones(N, bool)
  cases = {}
  cases["uniform +-100"] = (rng.uniform(-100, 100, (N, K)), all_valid)
  onehot = np.full((N, K), -100.0)
  onehot[np.arange(N), rng.integers(0, K, N)] = 100.0
  cases["one-hot extreme rows"] = (onehot, all_valid)
  same = np.full((N, K), -100.0)
  same[:, 0] = 100.0
  cases["every row on prototype 0"] = (same, all_valid)
  cases["all equal (+100)"] = (np.full((N, K), 100.0), all_valid)
  cases["all equal (-100)"] = (np.full((N, K), -100.0), all_valid)
  cases["rows constant, +-100 apart"] = (np.repeat(np.linspace(-100, 100, N)[:, None], K, 1), all_valid)
  one = np.zeros(N, bool)
  one[5] = True
  cases["single valid point"] = (rng.uniform(-100, 100, (N, K)), one)
  two = np.zeros(N, bool)
  two[[0, N - 1]] = True
  cases["two valid, one-hot opposite"] = (np.where(np.arange(K) == 0, 100.0, -100.0)[None].repeat(N, 0) *
                                          np.where(np.arange(N) % 2, 1, -1)[:, None], two)
  # Padding far above/below the valid scores (what an encoder may leave in padded slots): must be ignored.
  pad_hi = rng.uniform(-100, -90, (N, K))
  pad_hi[N // 2:] = 100.0
  cases["padded rows +100 over valid ~-95"] = (pad_hi, np.arange(N) < N // 2)
  pad_huge = rng.uniform(-100, 100, (N, K))
  pad_huge[N // 2:] = 1e6
  cases["padded rows 1e6"] = (pad_huge, np.arange(N) < N // 2)
  pad_low = rng.uniform(-100, 100, (N, K))
  pad_low[N // 2:] = -1e6
  cases["padded rows -1e6"] = (pad_low, np.arange(N) < N // 2)
  return {k: (np.asarray(s, np.float32), np.asarray(v, bool)) for k, (s, v) in cases.items()}


CASES = _cases()
NAMES = sorted(CASES)
SCORES = np.stack([CASES[n][0] for n in NAMES])     # f32[C, N, K]
VALID = np.stack([CASES[n][1] for n in NAMES])      # bool[C, N]

_sinkhorn = jax.jit(lambda s, v, a: objective.zipf_sinkhorn(s, v, a, 3))


@pytest.mark.parametrize("alpha", ALPHAS)
def test_zipf_sinkhorn_finite_and_marginals(alpha):
  out = np.asarray(_sinkhorn(SCORES, VALID, alpha))
  for c, name in enumerate(NAMES):
    t, valid = out[c], VALID[c]
    assert np.isfinite(t).all(), f"{name}, alpha={alpha}: non-finite targets"
    assert (t[~valid] == 0).all(), f"{name}: padded rows not 0"
    assert (t >= 0).all()
    np.testing.assert_allclose(t[valid].sum(0), 1.0, atol=1e-5, err_msg=f"{name}, alpha={alpha}: column sums")
    ref = np_zipf_sinkhorn(SCORES[c], valid, alpha)
    np.testing.assert_allclose(t, ref, atol=2e-5, rtol=1e-3, err_msg=f"{name}, alpha={alpha}")


def test_zipf_sinkhorn_alpha_shapes_the_iterations():
  """Sanity of the reference itself on a mild case: before the final column step the column masses follow w."""
  rng = np.random.default_rng(1)
  s = rng.normal(size=(40, K))
  for alpha in ALPHAS:
    q = np.exp(s) / np.exp(s).sum()
    w = np_zipf_prior(K, alpha)
    for _ in range(3):
      q /= q.sum(1, keepdims=True) * 40
      q *= w / q.sum(0, keepdims=True)
    np.testing.assert_allclose(q.sum(0), w, rtol=1e-12)
    got = np.asarray(_sinkhorn(s[None].astype(np.float32), np.ones((1, 40), bool), alpha))[0]
    np.testing.assert_allclose(got, q / q.sum(0), atol=1e-5)


def _kl_and_grad(target, scores, valid):
  return jax.value_and_grad(lambda s: jnp.sum(objective.softmap_kl(target, s, valid)))(scores)


_kl_and_grad_jit = jax.jit(_kl_and_grad)


def test_softmap_finite_with_extreme_logits_and_few_points():
  got = np.asarray(jax.jit(objective.softmap)(SCORES, VALID))
  for c, name in enumerate(NAMES):
    assert np.isfinite(got[c]).all(), name
    assert (got[c][~VALID[c]] == 0).all(), name
    np.testing.assert_allclose(got[c][VALID[c]].sum(0), 1.0, atol=1e-5, err_msg=name)
    # float32 logits of magnitude 100 carry ~1e-5 relative rounding into exp().
    np.testing.assert_allclose(got[c], np_softmap(SCORES[c], VALID[c]), rtol=2e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("alpha", (0.0, 3.0))
def test_softmap_kl_finite_value_and_gradient(alpha):
  targets = np.asarray(_sinkhorn(SCORES, VALID, alpha))
  # Student logits: the teacher's with the prototypes reversed (so the KL is far from 0), same extreme range and
  # the same padded rows.
  student = SCORES[:, :, ::-1].copy()
  value, grad = _kl_and_grad_jit(targets, student, VALID)
  per_set = np.asarray(jax.jit(objective.softmap_kl)(targets, student, VALID))
  assert np.isfinite(np.asarray(value))
  for c, name in enumerate(NAMES):
    assert np.isfinite(np.asarray(grad)[c]).all(), f"{name}: non-finite gradient"
    ref_kl, ref_grad = np_softmap_kl(targets[c], student[c], VALID[c])
    assert per_set[c] >= -1e-5, name
    np.testing.assert_allclose(per_set[c], ref_kl, rtol=1e-4, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(np.asarray(grad)[c], ref_grad, atol=1e-5, err_msg=name)
  # A target equal to the student's own softmap gives 0 (no spurious mass from padding).
  own = np.asarray(jax.jit(objective.softmap)(student, VALID))
  np.testing.assert_allclose(np.asarray(jax.jit(objective.softmap_kl)(own, student, VALID)), 0.0, atol=1e-4)


def test_softmap_kl_empty_set_is_zero_with_finite_gradient():
  valid = np.zeros((1, N), bool)
  value, grad = _kl_and_grad_jit(np.zeros((1, N, K), np.float32), SCORES[:1], valid)
  assert float(value) == 0.0 and np.isfinite(np.asarray(grad)).all() and not np.asarray(grad).any()


# The fused objective's custom backward pass once masked padded rows by multiplying exp(student - lse) by the
# validity: a padded logit ~88 above the valid ones overflowed to inf * 0 = NaN (single valid point, padding above
# the valid scores). These cases guard the fix (the row bias inside the exp).
def _fused_case(name):
  return pytest.param(name, id=name)


@functools.lru_cache(maxsize=None)
def _fused_and_composed(alpha):
  """Value and student gradient per case: the fused objective and softmap_kl(zipf_sinkhorn(...)), [C] / [C, N, K]."""
  student = SCORES[:, :, ::-1].copy()
  fused = jax.jit(jax.vmap(jax.value_and_grad(
      lambda t, s, v: jnp.sum(objective.zipf_softmap_kl(t, s, v, alpha, 3)[0]), argnums=1)))
  composed = jax.jit(jax.vmap(_kl_and_grad))
  targets = np.asarray(_sinkhorn(SCORES, VALID, alpha))
  return [np.asarray(x) for x in (*fused(SCORES, student, VALID), *composed(targets, student, VALID))]


@pytest.mark.parametrize("alpha", (0.0, 3.0))
@pytest.mark.parametrize("name", [_fused_case(n) for n in NAMES])
def test_fused_zipf_softmap_kl_matches_composition(name, alpha):
  value, grad, ref_value, ref_grad = (x[NAMES.index(name)] for x in _fused_and_composed(alpha))
  assert np.isfinite(value) and np.isfinite(grad).all(), f"{name}: non-finite fused value or gradient"
  np.testing.assert_allclose(value, ref_value, rtol=1e-4, atol=1e-3)
  np.testing.assert_allclose(grad, ref_grad, atol=1e-5)


def _loss_fns(valid, target, student):
  """name -> f(x) -> (output, scalar of it) for every objective function, x the input whose padded rows are
  poisoned (the student logits of the KLs, unless the name says 'teacher' or 'target')."""
  weights = np.random.default_rng(2).uniform(0.5, 1.5, (1, N, K)).astype(np.float32)

  def weighted(out):  # a scalar whose gradient reaches every output entry
    return out, jnp.sum(out * weights)

  def scalar(out):
    return out, jnp.sum(out)

  return {"zipf_sinkhorn": lambda s: weighted(objective.zipf_sinkhorn(s, valid, 1.0, 3)),
          "softmap": lambda s: weighted(objective.softmap(s, valid)),
          "softmap_kl": lambda s: scalar(objective.softmap_kl(target, s, valid)),
          "softmap_kl target": lambda t: scalar(objective.softmap_kl(t, student, valid)),
          "zipf_softmap_kl": lambda s: scalar(objective.zipf_softmap_kl(target, s, valid, 1.0, 3)[0]),
          "zipf_softmap_kl teacher": lambda t: scalar(objective.zipf_softmap_kl(t, student, valid, 1.0, 3)[0]),
          "clustering_targets": lambda s: weighted(objective.clustering_targets(s, valid, 3)),
          "clustering_loss": lambda s: scalar(objective.clustering_loss(target, s, valid))}


@pytest.mark.parametrize("garbage", (np.nan, np.inf, -np.inf, 1e6, -1e6), ids=str)
@pytest.mark.parametrize("fn", ("zipf_sinkhorn", "softmap", "softmap_kl", "softmap_kl target", "zipf_softmap_kl",
                                "zipf_softmap_kl teacher", "clustering_targets", "clustering_loss"))
def test_garbage_in_padded_rows_is_ignored(garbage, fn):
  """Padded slots may hold anything an encoder leaves there: outputs and gradients equal the clean-padding ones
  (the gradient of a padded entry is exactly 0)."""
  valid = (np.arange(N) < N // 2)[None]
  clean = SCORES[NAMES.index("uniform +-100")][None].copy()
  clean[:, N // 2:] = 0.0
  target = np.asarray(objective.zipf_sinkhorn(clean[:, :, ::-1], valid, 1.0, 3))
  fns = _loss_fns(valid, target, clean[:, :, ::-1].copy())
  x_clean = target if fn in ("softmap_kl target", "zipf_softmap_kl teacher") else clean
  if fn == "zipf_softmap_kl teacher":
    x_clean = clean[:, :, ::-1].copy()  # teacher logits (their padded rows 0), not targets
  x_dirty = np.where(valid[..., None], x_clean, np.float32(garbage)).astype(np.float32)

  def run(x):
    (value, out), grad = jax.value_and_grad(lambda x: fns[fn](x)[::-1], has_aux=True)(x)
    return [np.asarray(a) for a in (out, value, grad)]

  got, want = run(x_dirty), run(x_clean)
  # (d/dt of t log t is -inf where a valid target is exactly 0: the target gradient may be infinite there.)
  checked = got[:2] if fn == "softmap_kl target" else got
  assert all(np.isfinite(a).all() for a in checked), f"{fn}: non-finite output or gradient"
  for a, b in zip(got, want):  # the padded values are selected away: the very same arithmetic follows
    np.testing.assert_array_equal(a, b)
  assert not got[2][:, N // 2:].any(), f"{fn}: a padded entry has a gradient"


# ------------------------------------------------------------------------------------------ the train step


def _tiny_config():
  from configs import synthetic_tiny
  c = synthetic_tiny.get_config("smoke")
  c.num_prototypes = 16
  c.model.head_hidden = 32
  c.model.head_dim = 16
  c.data.capacity = 128
  c.data.student_capacity = 64
  c.data.num_workers = 0
  c.optim.warmup_frac = 0.0   # lr > 0 from step 0, so a clean step visibly moves the params
  return c


@pytest.fixture(scope="module")
def step_setup():
  """(state, clean batch, one jitted train_step) for a tiny config: compiled once for every test here."""
  from dos_jax.batching import train_views
  from dos_jax.data import scene as scene_lib
  from dos_jax.train import state as state_lib
  from dos_jax.train import step as step_lib
  cfg = _tiny_config()
  rng = np.random.default_rng(0)
  scenes = []
  for i in range(cfg.batch_size):
    n = 200
    coord = np.c_[rng.uniform(0, 1.2, (n, 2)), rng.uniform(0, 0.2, n)].astype(np.float32)
    normal = np.tile(np.float32([0, 0, 1]), (n, 1))
    scenes.append(scene_lib.Scene(coord=coord, color=rng.random((n, 3)).astype(np.float32), normal=normal,
                                  name=f"floor{i}"))
  batch = train_views.make_train_batch(scenes, spec_lib.batch_spec(cfg), np.random.default_rng(1))
  spec = specs.step_spec(cfg)
  state = jax.jit(lambda key: state_lib.create_train_state(spec, key, batch))(jax.random.PRNGKey(0))
  return state, batch, jax.jit(functools.partial(step_lib.train_step, spec=spec))


def _poisoned(batch, which, value):
  import dataclasses
  point_set = getattr(batch, which)
  feat = np.array(point_set.feat)
  feat[0, 0, 0] = value             # pack 0 (scene 0), slot 0 (view 0's first point): always a real point
  assert point_set.valid[0, 0]
  return dataclasses.replace(batch, **{which: dataclasses.replace(point_set, feat=feat)})


def _same(a, b):
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.system
def test_train_step_clean_batch_updates(step_setup):
  state, batch, step_fn = step_setup
  new, metrics = step_fn(state, batch, jax.random.PRNGKey(1))
  assert float(metrics["nonfinite"]) == 0 and np.isfinite(float(metrics["loss"]))
  assert int(new.step) == 1 and int(new.nonfinite_count) == 0
  assert not _same(new.params, state.params) and not _same(new.opt_state, state.opt_state)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(new.params))


@pytest.mark.system
@pytest.mark.parametrize("which,value", [("student", np.nan), ("teacher", np.inf), ("student", -np.inf)])
def test_train_step_skips_and_counts_nonfinite(step_setup, which, value):
  state, batch, step_fn = step_setup
  bad = _poisoned(batch, which, value)
  new, metrics = step_fn(state, bad, jax.random.PRNGKey(1))
  assert float(metrics["nonfinite"]) == 1, f"a {value} in the {which} features was not detected"
  assert int(new.step) == int(state.step) + 1 and int(new.nonfinite_count) == int(state.nonfinite_count) + 1
  assert _same(new.params, state.params) and _same(new.teacher_params, state.teacher_params)
  assert _same(new.opt_state, state.opt_state)
  # A second bad step counts again; a clean one afterwards trains normally from the untouched params.
  again, _ = step_fn(new, bad, jax.random.PRNGKey(2))
  assert int(again.nonfinite_count) == int(state.nonfinite_count) + 2 and _same(again.params, state.params)
  recovered, metrics = step_fn(again, batch, jax.random.PRNGKey(3))
  assert float(metrics["nonfinite"]) == 0 and int(recovered.nonfinite_count) == int(again.nonfinite_count)
  assert not _same(recovered.params, state.params)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(recovered.params))
