"""Model code: native LLaDA and the FlexMDM graft.

Importing this package registers the model types with transformers' Auto classes, so
`AutoConfig` / `AutoModel` / `AutoModelForCausalLM` / `AutoModelForMaskedLM.from_pretrained(dir)`
load LLaDA folders (even with an `auto_map` in config.json) without `trust_remote_code`.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

from retrofit.models.flexmdm import FlexMDMModel
from retrofit.models.flexmdm_config import FlexMDMConfig
from retrofit.models.llada import LLaDAConfig, LLaDAModelLM


def _register(config_cls, model_cls, auto_classes) -> None:
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    for auto in auto_classes:
        auto.register(config_cls, model_cls, exist_ok=True)


_register(LLaDAConfig, LLaDAModelLM, (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM))
_register(FlexMDMConfig, FlexMDMModel, (AutoModel,))

__all__ = ["FlexMDMConfig", "FlexMDMModel", "LLaDAConfig", "LLaDAModelLM"]
