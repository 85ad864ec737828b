"""Names both sides validate: algorithms, hyperparameters, templates, options, backends.

The operator checks a resource against these before it creates any pod, so a
typo becomes a condition at once instead of a failed pod minutes later; the
workloads check the same names again when run by hand.
"""

from __future__ import annotations

from typing import Any, Final

ALGORITHMS: Final = ("resnet_v1_50", "resnet_v1_101", "mobilenet_v1")
DEFAULT_ALGORITHM: Final = "resnet_v1_50"

# Training recipes: the value of the `recipe` hyperparameter picks the
# learning-rate schedule and the defaults of every other hyperparameter.
#   tuned      measured on the flower photos for short runs on a few CPU cores:
#              linear warm-up then cosine decay to 0, label smoothing, photo
#              augmentation (random resized crop, flips, colour jitter); with
#              --weights, two-phase fine-tuning. (Evaluating on a centre crop,
#              `eval_crop`, is available but lost accuracy there, so it is off.)
#   modelarts  the ModelArts ResNet_v1_50 preset as documented
#              (ascend-reference.md §1): constant learning rate 0.002, SGD
#              momentum 0.9, weight decay 0.00004, flips only, whole-network
#              training from the first step.
RECIPE_TUNED: Final = "tuned"
RECIPE_MODELARTS: Final = "modelarts"
RECIPES: Final = (RECIPE_TUNED, RECIPE_MODELARTS)
DEFAULT_RECIPE: Final = RECIPE_TUNED

# Every hyperparameter's default under each recipe (the same names, in the same order).
RECIPE_DEFAULTS: Final[dict[str, dict[str, Any]]] = {
    RECIPE_MODELARTS: {
        "batch_size": 32,
        "learning_rate": 0.002,
        "momentum": 0.9,
        "weight_decay": 0.00004,
        "epochs": 100,  # maximum; early stopping usually ends sooner
        "patience": 8,  # early-stopping patience, in epochs
        "image_size": 224,
        "eval_every": 1,  # evaluate every N epochs
        "warmup_epochs": 0.0,  # linear learning-rate warm-up at the start of each phase
        "label_smoothing": 0.0,
        "crop_scale": 1.0,  # smallest area of a random resized crop; 1 = no crop
        "color_jitter": 0.0,  # brightness/contrast/saturation jitter strength; 0 = off
        "eval_crop": 1.0,  # centre crop (share of the side) the exported model looks at; 1 = whole image
        "freeze_epochs": 0,  # with --weights: epochs training the new head only, backbone frozen
        "fine_tune_lr_scale": 1.0,  # with --weights: learning-rate factor once the backbone trains
    },
    RECIPE_TUNED: {
        # Measured on the flower photos (mobilenet_v1, 128x128, 9 epochs from random weights, 2 CPU
        # cores; validation accuracy, docs/trainer.md): learning rate 0.01 -> 0.58, 0.02 -> 0.61,
        # 0.05 -> 0.55; batch 16 (at 0.01) -> 0.57 and ~20% fewer images/s; crop_scale 0.35 -> 0.58,
        # crop_scale 0.8 without jitter -> 0.59. With --weights the whole network then trains at
        # 0.02 x fine_tune_lr_scale 0.1 = 0.002, ModelArts' documented fine-tuning rate.
        "batch_size": 32,
        "learning_rate": 0.02,
        "momentum": 0.9,
        "weight_decay": 0.00004,
        "epochs": 100,
        "patience": 8,
        "image_size": 224,
        "eval_every": 1,
        "warmup_epochs": 1.0,
        "label_smoothing": 0.1,
        "crop_scale": 0.5,
        "color_jitter": 0.1,
        "eval_crop": 1.0,  # measured: a centre crop lost accuracy on these photos (docs/trainer.md)
        "freeze_epochs": 3,
        "fine_tune_lr_scale": 0.1,
    },
}
assert len({tuple(d) for d in RECIPE_DEFAULTS.values()}) == 1, "every recipe sets every hyperparameter"

# The hyperparameters' defaults when nothing is set (the default recipe's).
HYPERPARAMETER_DEFAULTS: Final[dict[str, Any]] = {"recipe": DEFAULT_RECIPE, **RECIPE_DEFAULTS[DEFAULT_RECIPE]}
HYPERPARAMETERS: Final = tuple(HYPERPARAMETER_DEFAULTS)
# Hyperparameters whose value is a name, with the names allowed; all others are numbers.
HYPERPARAMETER_CHOICES: Final[dict[str, tuple[str, ...]]] = {"recipe": RECIPES}

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
