"""Host-side batching: scenes -> fixed-shape, padded, serialized point sets (numpy only).

Modules:
  structs        the batch contract (Stage, PointSet, TrainBatch, LabeledBatch)
  serialization  z-order / Hilbert codes (and transposed variants) of voxel grids
  patches        build_point_set, stage_capacities, stack_point_sets: padding, orders, neighbours, pooling
  pipeline       make_train_batch, make_labeled_batch, TrainIterator (prefetching, resumable by step)
"""
