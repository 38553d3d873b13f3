"""Host-side batching: scenes -> fixed-shape, padded, serialized point sets (numpy only).

Modules:
  structs        the batch contract (Stage, PointSet, TrainView, TrainBatch (always packs), LabeledBatch)
  serialization  z-order / Hilbert codes (and transposed variants) of voxel grids
  patches        build_point_set, stage_capacities, stack_point_sets: padding, orders, neighbours, pooling
  spec           batch_spec(cfg) -> BatchSpec, pipeline_spec(cfg) -> PipelineSpec (with PackSpec, the budgets): a
                 validated config's batching keys, decoded once (the gate, dos_jax.schema.validate, checks them)
  packing        fill_pack (as many scenes as fit the budgets) / pack_train_views: views in one set per stage
  train_views    train_views (one scene -> V TrainViews), make_train_batch (direct), stack_views (inspection)
  eval_batch     make_labeled_batch (one deterministic view per scene, with labels)
  pipeline       grain: global example sequence, per-process step batches, TrainIterator (resumable by step);
                 all take a PipelineSpec
"""
