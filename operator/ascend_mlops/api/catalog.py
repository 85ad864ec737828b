"""Names both sides validate: algorithms, hyperparameters, templates, options, backends.

The operator checks a resource against these before it creates any pod, so a
typo becomes a condition at once instead of a failed pod minutes later; the
workloads check the same names again when run by hand.
"""

from __future__ import annotations

from typing import Any, Final

ALGORITHMS: Final = ("resnet_v1_50", "resnet_v1_101", "mobilenet_v1")
DEFAULT_ALGORITHM: Final = "resnet_v1_50"

# The ModelArts ResNet_v1_50 preset's defaults (ascend-reference.md §1), plus image_size.
HYPERPARAMETER_DEFAULTS: Final[dict[str, Any]] = {
    "batch_size": 32,
    "learning_rate": 0.002,
    "momentum": 0.9,
    "weight_decay": 0.00004,
    "epochs": 100,  # maximum; early stopping usually ends sooner
    "patience": 8,  # early-stopping patience, in epochs
    "image_size": 224,
    "eval_every": 1,  # evaluate every N epochs
}
HYPERPARAMETERS: Final = tuple(HYPERPARAMETER_DEFAULTS)

DEFAULT_TRAIN_RATIO: Final = 0.8

# Conversion templates (the converter owns their full definitions).
TEMPLATE_SEED: Final = "TF-FrozenGraph-To-Ascend-C32"
TEMPLATE_DYNAMIC_BATCH: Final = "TF-FrozenGraph-To-Ascend-C32-DynamicBatch"
TEMPLATES: Final = (TEMPLATE_SEED, TEMPLATE_DYNAMIC_BATCH)

# Conversion options by their spec names (ModelConversion.spec.options.*),
# passed to `ascend-mlops convert --set NAME=VALUE`.
CONVERSION_OPTIONS: Final = (
    "inputShape",
    "inputFormat",
    "outNodes",
    "outputType",
    "preferredDataFormat",
    "highPrecision",
    "precisionMode",
    "l2Optimize",
    "dynamicBatchSizes",
    "log",
)
SOC_VERSIONS: Final = ("Ascend310",)

BACKENDS: Final = ("acl", "tensorflow")
DEFAULT_ACCELERATOR_RESOURCE: Final = "huawei.com/Ascend310"
