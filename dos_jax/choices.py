"""The accepted values of the config switches that JAX modules implement, named once.

The gate (`dos_jax.schema.validate`) checks configs without importing JAX, so the choice lists of the layers
written in JAX live here, and those layers import them from here. Choice lists of numpy layers live in the layer
(`dos_jax.data.views.VIEW_MODES`, `dos_jax.data.synthetic.KINDS`, `dos_jax.data.catalog.FORMATS`,
`dos_jax.batching.spec.SUPERVISION` / `OVERFLOW` / `WORKER_BACKENDS` / `FEATURE_DIMS`,
`dos_jax.variants.VARIANTS`).
"""

NORMALIZATIONS = ("softmap", "clustering")  # dos_jax.objective.dos_loss: DOS softmaps | the clustering baseline
MODEL_DTYPES = ("float32", "bfloat16")      # dos_jax.models.encoder: compute dtype (params stay float32)
ATTENTION_KERNELS = ("xla", "cudnn")        # dos_jax.models.blocks: patch attention kernel
NONFINITE_POLICIES = ("skip", "stop")       # dos_jax.train.loop: skip the step | stop the run
