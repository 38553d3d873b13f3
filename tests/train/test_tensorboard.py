"""The end-of-run hint `tensorboard --logdir DIR` works: requirements.txt installs TensorBoard next to the
interpreter, and TensorBoard's own event reader reads the scalars our writer (tensorboardX) puts in DIR."""

import os
import sys

from dos_jax.train import writers


def test_tensorboard_reads_the_run_scalars(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  w = writers.MetricWriter(str(tmp_path), start_step=0)
  for step, loss in ((10, 2.5), (20, 1.25)):
    w.write_scalars(step, {"loss": loss, "effective_prototypes": 40.0 + step})
  w.close()
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(10, 2.5), (20, 1.25)]
  assert [e.value for e in acc.Scalars("effective_prototypes")] == [50.0, 60.0]
  # The command itself sits beside this interpreter (pip's console script), as it does after the README install.
  assert os.path.isfile(os.path.join(os.path.dirname(sys.executable), "tensorboard"))
