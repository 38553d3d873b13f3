"""Host-side batching: scenes -> fixed-shape, padded, serialized point sets (numpy only).

Modules:
  structs        the batch contract (Stage, PointSet, TrainBatch, LabeledBatch)
  serialization  z-order / Hilbert codes (and transposed variants) of voxel grids
  patches        build_point_set, stage_capacities, stack_point_sets: padding, orders, neighbours, pooling
  spec           batch_spec(cfg) -> BatchSpec, pipeline_spec(cfg) -> PipelineSpec (with PackSpec): a validated
                 config's batching keys, decoded once (the gate, dos_jax.schema.validate, checks them)
  packing        pack_train_views / build_packs: the views of a device's scenes in one point set per stage
  train_views    train_views (one scene -> V training views), stack_batch, make_train_batch
  eval_batch     make_labeled_batch (one deterministic view per scene, with labels)
  pipeline       grain: global example sequence, per-process step batches, TrainIterator (resumable by step);
                 all take a PipelineSpec
"""
