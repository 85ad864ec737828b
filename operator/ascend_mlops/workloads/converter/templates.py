"""Named conversion templates, as ModelArts offers them: a source framework, a
target chip, and default values for the advanced options (which a
ModelConversion's `spec.options` may override)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from ascend_mlops.api import catalog, contract
from ascend_mlops.ascend import atc


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    framework: str  # ATC --framework
    soc_version: str  # ATC --soc_version
    defaults: Mapping[str, str] = field(default_factory=dict)
    # True: the model takes batches of any listed size (-1 batch axis +
    # dynamicBatchSizes). False: exactly one fixed batch, like the seed's "batch 1 only".
    dynamic_batch: bool = False
    fixed_batch: int | None = 1


_SEED_DEFAULTS: Final = {
    "inputShape": f"{contract.INPUT_NODE}:1,224,224,3",
    "inputFormat": "NHWC",
    "outNodes": f"{contract.OUTPUT_NODE}:0",
    "preferredDataFormat": "5D",
    "highPrecision": "0",
    "outputType": "FP32",
    "l2Optimize": "true",
}

TEMPLATES: Final[Mapping[str, Template]] = MappingProxyType(
    {
        catalog.TEMPLATE_SEED: Template(
            name=catalog.TEMPLATE_SEED,
            description="TensorFlow frozen graph to an Ascend 310 offline model, batch 1 (ModelArts' template)",
            framework=atc.FRAMEWORK_TENSORFLOW,
            soc_version="Ascend310",
            defaults=MappingProxyType(dict(_SEED_DEFAULTS)),
        ),
        catalog.TEMPLATE_DYNAMIC_BATCH: Template(
            name=catalog.TEMPLATE_DYNAMIC_BATCH,
            description=(
                "TensorFlow frozen graph to an Ascend 310 offline model that accepts several batch "
                "sizes (ATC dynamic batch), so a server can batch requests"
            ),
            framework=atc.FRAMEWORK_TENSORFLOW,
            soc_version="Ascend310",
            defaults=MappingProxyType(
                {
                    **_SEED_DEFAULTS,
                    "inputShape": f"{contract.INPUT_NODE}:-1,224,224,3",
                    "dynamicBatchSizes": "1,2,4,8",
                }
            ),
            dynamic_batch=True,
            fixed_batch=None,
        ),
    }
)


class UnknownTemplate(ValueError):
    pass


def get(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise UnknownTemplate(
            f"unknown conversion template {name!r}; available templates: {', '.join(TEMPLATES)}"
        ) from None
