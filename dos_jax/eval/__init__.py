"""Evaluation: linear probing of frozen features, segmentation metrics, collapse signatures, plots.

Modules (import the one you need; none is imported here, so `import dos_jax.eval` stays cheap):
  miou          confusion matrix (numpy and jit-able), per-class IoU, mIoU over present classes, group means.
  splits        class lists (ScanNet-20/200, S3DIS, SemanticKITTI), ScanNet200 head/common/tail, scene splits.
  linear_probe  fit_linear_probe / predict on feature matrices, extract_features from a frozen encoder,
                train_supervised (the supervised reference); they take decoded specs (BatchSpec, ModelSpec).
  collapse      prototype collapse, point-wise collapse, over-segmentation, prototype usage.
  plots         alpha vs group mIoU, loss curves, rank-frequency vs the Zipf prior, top-down renders (PNG).
  diagnostics   per-step training diagnostics (used by the training loop).
The command is `python -m launch.probe` (its logic: `dos_jax.eval.probe.run_probe`, the one config-taking entry).
"""
