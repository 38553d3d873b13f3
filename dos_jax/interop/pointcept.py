"""Upstream Pointcept PTv3 checkpoints (Sonata's PT-v3m2, supervised PT-v3m1) in the dos_jax encoder.

  params, model_cfg = pointcept.load_checkpoint("sonata.pth")                 # branch="student" by default
  feats = pointcept.point_features(params, model_cfg, coord, feat, grid_coord)  # f32[N, sum(enc_channels)]
  state_dict = pointcept.to_state_dict(params, model_cfg)   # upstream names; load_state_dict(strict=True) takes it

`model_cfg` is a plain dict: upstream's constructor names (`type` 'PT-v3m2' | 'PT-v3m1', `in_channels`,
`enc_channels`, `enc_depths`, `enc_num_head`, `enc_patch_size`, `order`, `mask_token`, `layer_scale`, `mlp_ratio`)
plus dos keys (`dtype`, `attention`, `drop_path`, `shuffle_orders`, `upcast_projection=False`: upstream has no
weights for the dos projection; `up_cast_level`: 0 = every level, Sonata's probe head 2). `model_spec(model_cfg)`
is the `dos_jax.models.spec.ModelSpec` the encoder takes (`encoder.apply(..., spec=pointcept.model_spec(cfg))`);
`launch.probe --init-from` merges the dict into config.model, where `dos_jax.specs.model_spec` decodes the same
architecture.

What the tensors cannot tell comes from `overrides` and must match the run's config: `enc_num_head` (default
C // 16 per stage, Sonata's and PTv3's choice), `enc_patch_size` (default 1024 per stage, Sonata's and PTv3's
configs), `order` (default z, z-trans, hilbert, hilbert-trans). `stride` must be 2 per pooling. With the same
weights, points and orders (upstream's `shuffle_orders` off at the backbone AND in every pooling module), the
encoder equals upstream to float32 rounding on any cloud (tests: real ScanNet scans, 0.02-0.1 m, several patch
sizes, 3-5 stages, all four orders; <= 1e-4 relative).

Reading a checkpoint needs torch (`torch.load(weights_only=True)`: tensors and plain containers only, no
arbitrary unpickling); nothing else here does.
"""

from __future__ import annotations

import functools
import pickle
from typing import Any, Dict, Mapping, Tuple, Union

import flax.traverse_util
import jax
import numpy as np

from dos_jax import choices
from dos_jax import variants
from dos_jax.batching import patches
from dos_jax.batching import structs
from dos_jax.errors import ConfigError, DataError
from dos_jax.interop import pointcept_names as names
from dos_jax.models import encoder
from dos_jax.models.spec import ModelSpec

_DEFAULT_ORDER = structs.ORDERS
_DEFAULT_PATCH = 1024
# Keys a caller may override (the rest of model_cfg is inferred from the tensors).
_OVERRIDES = ("enc_num_head", "enc_patch_size", "order", "stride", "up_cast_level", "upcast_projection", "dtype",
              "attention", "shuffle_orders")


def _prefixed(keys, prefix: str) -> bool:
  return any(k.startswith(prefix) for k in keys)


def _strip(state: Mapping[str, Any], prefix: str, keep_only: bool) -> Dict[str, Any]:
  out = {}
  for k, v in state.items():
    if k.startswith(prefix):
      out[k[len(prefix):]] = v
    elif not keep_only:
      out[k] = v
  return out


def unwrap_state_dict(obj: Any, branch: str = "student", source: str = "state_dict") -> Dict[str, Any]:
  """The backbone's {name: tensor} from what `torch.load` returned: a state_dict, or a dict holding one under
  `state_dict` (Pointcept's trainer) or `model`; strips `module.` (DDP); keeps `{branch}.backbone.*` (Sonata:
  student/teacher) or `backbone.*` (a segmentor) when keys carry them."""
  if branch not in ("student", "teacher"):
    raise ConfigError(f"branch={branch!r}: expected 'student' or 'teacher'")
  state = obj
  if isinstance(obj, Mapping):
    for key in ("state_dict", "model"):
      if isinstance(obj.get(key), Mapping):
        state = obj[key]
        break
  if not isinstance(state, Mapping) or not state:
    raise DataError(f"{source}: no state_dict found (expected a mapping of names to tensors, or a dict with one "
                    f"under 'state_dict' or 'model')")
  state = dict(state)
  while state and all(k.startswith("module.") for k in state):
    state = _strip(state, "module.", keep_only=True)
  if _prefixed(state, "student.backbone.") or _prefixed(state, "teacher.backbone."):
    if not _prefixed(state, f"{branch}.backbone."):
      raise DataError(f"{source}: has no '{branch}.backbone.*' weights (branch={branch!r})")
    state = _strip(state, f"{branch}.backbone.", keep_only=True)
  elif _prefixed(state, "backbone."):
    state = _strip(state, "backbone.", keep_only=True)
  return state


def load_checkpoint(path: str, branch: str = "student", **overrides) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(params, model_cfg) of the PTv3 encoder in a Pointcept / Sonata checkpoint written by `torch.save`.

  The file is untrusted: it is read with `torch.load(weights_only=True)`, which only rebuilds tensors and plain
  containers; a file that needs anything else (a pickled class, a function to call) raises one `DataError`
  naming it, and none of its code runs.

  Raises:
    DataError: unreadable file, a pickle that needs code, no state_dict, unknown or missing weights.
    ConfigError: a bad override.
  """
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("reading a PyTorch checkpoint needs torch (pip install -r requirements-dev.txt)") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except FileNotFoundError as e:
    raise DataError(f"{path}: no such checkpoint file") from e
  except pickle.UnpicklingError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise DataError(f"{path}: refused: the checkpoint needs more than tensors and plain containers to unpickle "
                    f"(read with torch.load(weights_only=True); nothing in it was run). {first}") from e
  except (RuntimeError, EOFError, OSError, ValueError) as e:
    raise DataError(f"{path}: not a readable torch.save checkpoint ({type(e).__name__}: {e})") from e
  state = unwrap_state_dict(obj, branch, source=path)
  arrays = {}
  for k, v in state.items():
    if not isinstance(v, torch.Tensor):
      raise DataError(f"{path}: state_dict entry {k!r} is a {type(v).__name__}, not a tensor")
    arrays[k] = v.detach().cpu().numpy()
  try:
    return from_state_dict(arrays, **overrides)
  except DataError as e:
    raise DataError(f"{path}: {e}") from e


def _stage_indices(state: Mapping[str, Any]) -> Dict[int, set]:
  stages: Dict[int, set] = {}
  for k in state:
    parts = k.split(".")
    if len(parts) > 2 and parts[0] == "enc" and parts[1].startswith("enc") and parts[1][3:].isdigit():
      blocks = stages.setdefault(int(parts[1][3:]), set())
      if parts[2].startswith("block") and parts[2][5:].isdigit():
        blocks.add(int(parts[2][5:]))
  return stages


def infer_config(state: Mapping[str, Any], **overrides) -> Dict[str, Any]:
  """model_cfg of an upstream encoder state_dict (name -> array) plus `overrides` (see the module docstring)."""
  bad = sorted(set(overrides) - set(_OVERRIDES))
  if bad:
    raise ConfigError(f"unknown override(s) {bad}: expected some of {list(_OVERRIDES)}")
  if "embedding.stem.linear.weight" in state:
    kind, stem = "PT-v3m2", np.shape(state["embedding.stem.linear.weight"])
    in_channels = int(stem[1])
  elif "embedding.stem.conv.weight" in state:
    kind, stem = "PT-v3m1", np.shape(state["embedding.stem.conv.weight"])
    if len(stem) != 5 or stem[1:4] != (5, 5, 5):
      raise DataError(f"embedding.stem.conv.weight has shape {stem}; PT-v3m1's stem is [C, 5, 5, 5, C_in]")
    in_channels = int(stem[4])
  else:
    raise DataError("not a PTv3 encoder: no embedding.stem.linear.weight (PT-v3m2 / Sonata) or "
                    f"embedding.stem.conv.weight (PT-v3m1); first keys: {sorted(state)[:5]}")
  stages = _stage_indices(state)
  if not stages or sorted(stages) != list(range(len(stages))):
    raise DataError(f"encoder stages enc.enc0 .. must be consecutive, found {sorted(stages)}")
  depths, channels = [], []
  for s in range(len(stages)):
    blocks = stages[s]
    if not blocks or sorted(blocks) != list(range(len(blocks))):
      raise DataError(f"enc.enc{s}: blocks must be block0 .. block{{d-1}}, found {sorted(blocks)}")
    depths.append(len(blocks))
    channels.append(int(np.shape(state[f"enc.enc{s}.block0.norm1.0.weight"])[0]))
  hidden = int(np.shape(state["enc.enc0.block0.mlp.0.fc1.weight"])[0])
  heads = overrides.get("enc_num_head")
  if heads is None:
    if any(c % 16 for c in channels):
      raise ConfigError(f"enc_num_head: channels {channels} are not multiples of 16; pass enc_num_head=(...) "
                        f"as the checkpoint's config")
    heads = [c // 16 for c in channels]
  patch = overrides.get("enc_patch_size", _DEFAULT_PATCH)
  stride = overrides.get("stride", (2,) * (len(channels) - 1))
  if any(int(x) != 2 for x in np.atleast_1d(stride)):
    raise ConfigError(f"stride={stride}: dos_jax pools with stride 2 only")
  cfg = dict(type=kind, in_channels=in_channels, enc_channels=tuple(channels), enc_depths=tuple(depths),
             enc_num_head=tuple(int(h) for h in heads),
             enc_patch_size=tuple(int(p) for p in np.broadcast_to(patch, (len(channels),))),
             order=tuple(np.atleast_1d(overrides.get("order", _DEFAULT_ORDER)).tolist()),
             mask_token="embedding.mask_token" in state, layer_scale=any(".ls1.0.gamma" in k for k in state),
             mlp_ratio=hidden / channels[0], drop_path=0.0, dtype=overrides.get("dtype", "float32"),
             attention=overrides.get("attention", "xla"), shuffle_orders=bool(overrides.get("shuffle_orders", False)),
             up_cast_level=int(overrides.get("up_cast_level", 0)),
             upcast_projection=bool(overrides.get("upcast_projection", False)))
  if len(cfg["enc_num_head"]) != len(channels):
    raise ConfigError(f"enc_num_head={cfg['enc_num_head']}: expected {len(channels)} entries (one per stage)")
  if any(c % h for c, h in zip(channels, cfg["enc_num_head"])):
    raise ConfigError(f"enc_num_head={cfg['enc_num_head']}: each must divide the stage's channels {channels}")
  if len(cfg["enc_patch_size"]) != len(channels) or min(cfg["enc_patch_size"]) < 1:
    raise ConfigError(f"enc_patch_size={patch}: expected a positive size, or one per stage ({len(channels)})")
  if not cfg["order"] or any(o not in structs.ORDERS for o in cfg["order"]):
    raise ConfigError(f"order={cfg['order']!r}: expected names among {structs.ORDERS}")
  if cfg["dtype"] not in choices.MODEL_DTYPES or cfg["attention"] not in choices.ATTENTION_KERNELS:
    raise ConfigError(f"dtype={cfg['dtype']!r}, attention={cfg['attention']!r}: expected one of "
                      f"{choices.MODEL_DTYPES} and one of {choices.ATTENTION_KERNELS}")
  if cfg["up_cast_level"] < 0:
    raise ConfigError(f"up_cast_level={cfg['up_cast_level']}: expected >= 0 (0 = every level)")
  return cfg


def model_spec(model_cfg: Union[Mapping[str, Any], ModelSpec]) -> ModelSpec:
  """The ModelSpec of an upstream model config (`load_checkpoint` / `from_state_dict` / `infer_config`'s dict).

  The one place that decodes upstream's dict: it reads every key `infer_config` writes (upstream's constructor
  names and the dos evaluation keys above) by item, with no defaults of its own (a missing key raises;
  what upstream leaves unsaid, `infer_config` filled from the tensors, the overrides or upstream's documented
  defaults). Evaluation settings: no remat. A ModelSpec (a dos encoder's) is returned unchanged."""
  if isinstance(model_cfg, ModelSpec):
    return model_cfg
  architecture = variants.upstream_architecture(model_cfg)
  if architecture is None:
    raise ConfigError(f"not an upstream model config (no {variants.UPSTREAM_KEYS}): pass load_checkpoint's "
                      "model_cfg, or the ModelSpec of a dos encoder")
  return ModelSpec(dtype=str(model_cfg["dtype"]), attention=str(model_cfg["attention"]), remat=False,
                   drop_path=float(model_cfg["drop_path"]), mlp_ratio=float(model_cfg["mlp_ratio"]),
                   shuffle_orders=bool(model_cfg["shuffle_orders"]), up_cast_level=int(model_cfg["up_cast_level"]),
                   upcast_projection=bool(model_cfg["upcast_projection"]), architecture=architecture)


def _dummy_points(model_cfg: Mapping[str, Any]):
  """A few-point batched PointSet with the model's stage count and input width (for abstract param shapes
  only)."""
  num_stages = len(model_cfg["enc_channels"])
  side = 2 ** num_stages
  g = np.stack(np.meshgrid(np.arange(side), np.arange(side), [0], indexing="ij"), -1).reshape(-1, 3)
  feat = np.zeros((len(g), int(model_cfg["in_channels"])), np.float32)
  ps = patches.build_point_set(g.astype(np.float32), feat, np.arange(len(g)), 1.0, len(g), num_stages, 1,
                               grid=g, capacities=patches.stage_counts(g, num_stages),
                               stem_neighbors=model_cfg["type"] == "PT-v3m1")
  return patches.stack_point_sets([ps])


def param_shapes(model_cfg: Mapping[str, Any]) -> Dict[Tuple[str, ...], Tuple[int, ...]]:
  """{Flax path: shape} of the encoder params `model_cfg` describes (abstract init: no compile)."""
  model = encoder.build(model_spec(model_cfg))
  tree = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, _dummy_points(model_cfg)))["params"]
  return {p: tuple(v.shape) for p, v in flax.traverse_util.flatten_dict(tree).items()}


def from_state_dict(state_dict: Mapping[str, Any], **overrides) -> Tuple[Dict[str, Any], Dict[str, Any]]:
  """(params, model_cfg) from an in-memory upstream encoder state_dict (name -> array or tensor), strictly: every
  weight the model needs must be there with its upstream shape, and every entry must be used (BatchNorm's
  `num_batches_tracked` excepted)."""
  state = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in state_dict.items()}
  state = unwrap_state_dict(state) if any(k.startswith(("module.", "student.", "teacher.", "backbone."))
                                         for k in state) else state
  cfg = infer_config(state, **overrides)
  flat, used = {}, set()
  for path, shape in param_shapes(cfg).items():
    if path[0] == "upcast":
      raise ConfigError("upcast_projection=True: the dos upcast projection has no upstream weights")
    name = names.upstream_name(path)
    if name not in state:
      raise DataError(f"missing weight {name!r} (for {'/'.join(path)}, model {cfg['type']})")
    _, from_up = names.layouts(path, len(shape))
    value = np.asarray(from_up(np.asarray(state[name])), np.float32)
    if value.shape != shape:
      raise DataError(f"{name}: shape {np.shape(state[name])} does not fit {cfg['type']} {'/'.join(path)} {shape}")
    flat[path] = value
    used.add(name)
  extra = sorted(k for k in set(state) - used if not k.endswith("num_batches_tracked"))
  if extra:
    raise DataError(f"unexpected weights for a {cfg['type']} encoder: {extra[:6]}{' ...' if len(extra) > 6 else ''}")
  return flax.traverse_util.unflatten_dict(flat), cfg


def to_state_dict(params: Any, model_cfg: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Upstream names and shapes of the encoder `params` (accepted by upstream's `load_state_dict(strict=True)`
  for the model `model_cfg` describes). The dos upcast projection, which upstream has no module for, is left
  out. `from_state_dict(to_state_dict(p, c))` returns `p` exactly (pure layout changes)."""
  del model_cfg  # names follow from the params' paths; kept in the signature for the contract
  out = {}
  for path, value in flax.traverse_util.flatten_dict(dict(params)).items():
    if path[0] == "upcast":
      continue
    value = np.asarray(value)
    to_up, _ = names.layouts(path, value.ndim)
    out[names.upstream_name(path)] = np.ascontiguousarray(to_up(value))
    if names.is_batch_norm(path) and path[-1] == "scale":
      out[names.upstream_name(path).rsplit(".", 1)[0] + ".num_batches_tracked"] = np.array(0, np.int64)
  return out


@functools.lru_cache(maxsize=8)
def _features_fn(spec: ModelSpec):
  # Every level concatenated (the contract), the dos projection (if any) not applied.
  model = encoder.build(encoder.all_stages_spec(spec))

  def run(p, pts):
    out, aux = model.apply({"params": p}, pts, train=False)
    return out, [aux[f"enc{s}"] for s in range(len(model.channels))]
  return jax.jit(run)


def bucket_capacities(counts) -> list:
  """Per-stage capacities: each count rounded up to a multiple of 1/16 of its power of two (< 12.5% padding), so
  clouds of similar sizes share one compiled program (padded slots are masked and real points come first, so the
  features do not depend on the capacities)."""
  out = []
  for c in counts:
    step = max(1, (1 << max(0, int(c) - 1).bit_length()) // 16)
    out.append(-(-int(c) // step) * step)
  return out


def _run(params, model_cfg, coord, feat, grid_coord):
  coord = np.asarray(coord, np.float32)
  grid = np.asarray(grid_coord)
  n = len(coord)
  if grid.shape != (n, 3) or np.shape(feat)[0] != n:
    raise DataError(f"point_features: coord {coord.shape}, feat {np.shape(feat)} and grid_coord {grid.shape} must "
                    f"be [N, 3], [N, C], [N, 3]")
  if n and len(np.unique(grid, axis=0)) != n:
    raise DataError("point_features: grid_coord has repeated voxels; grid-sample the cloud first (one point per "
                    "voxel)")
  spec = model_spec(model_cfg)
  model = encoder.build(spec)
  num_stages = len(model.channels)
  m1 = model.embedding == "conv"
  caps = bucket_capacities(patches.stage_counts(grid, num_stages))
  ps = patches.build_point_set(coord, feat, np.arange(n), 1.0, caps[0], num_stages, 1, name="point_features",
                               grid=grid, capacities=caps, depth_rule="inherit" if m1 else "recompute",
                               stem_neighbors=m1)
  out, stage_feats = _features_fn(spec)(params, patches.stack_point_sets([ps]))
  stages = [(st.grid[st.valid].astype(np.int64), np.asarray(f[0])[st.valid])
            for st, f in zip(ps.stages, stage_feats)]
  return np.asarray(out[0, :n]), stages


def point_features(params: Any, model_cfg: Union[Mapping[str, Any], ModelSpec], coord: np.ndarray, feat: np.ndarray,
                   grid_coord: np.ndarray) -> np.ndarray:
  """The eval-mode encoder on ONE grid-sampled cloud: f32[N, sum(enc_channels)], rows in input order.

  Args:
    params: encoder params (`load_checkpoint` / `from_state_dict`, or a dos encoder's).
    model_cfg: its model config (`load_checkpoint`'s), or the ModelSpec of a dos encoder.
    coord: f32[N, 3] coordinates in metres, one point per voxel.
    feat: f32[N, C_in] input features (Pointcept's `feat`, e.g. coord + colour + normal).
    grid_coord: int[N, 3] voxel coordinates as Pointcept's `GridSample` gives them (floor(coord / grid_size)
      minus its minimum; non-negative).

  Returns:
    Every stage's features carried back to the input points and concatenated in stage order (upstream: per
    pooling level, `parent.feat = cat(parent.feat, point.feat[pooling_inverse])`).
  """
  return _run(params, model_cfg, coord, feat, grid_coord)[0]


def stage_features(params: Any, model_cfg: Union[Mapping[str, Any], ModelSpec], coord: np.ndarray, feat: np.ndarray,
                   grid_coord: np.ndarray):
  """Like `point_features`, also each stage's own output: ([(grid i64[N_s, 3], feat f32[N_s, C_s])], f32[N, D])
  (stage rows in ascending parent-voxel order; match them to another implementation's by grid coordinate)."""
  out, stages = _run(params, model_cfg, coord, feat, grid_coord)
  return stages, out
