"""Samplers: FlexMDM tau-leaping (insert + unmask) and the LLaDA masked-diffusion baseline.

    from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig
    out = FlexMDMSampler(model).sample([prompt_ids])

`retrofit.sampling.load.load_model(folder)` loads either kind of folder; the `retrofit generate`
and `retrofit infill` verbs wrap both samplers.
"""

import importlib
from typing import Any

from retrofit.sampling.flexmdm_config import FlexMDMSamplerConfig
from retrofit.sampling.mdm_config import MDMSamplerConfig

# The samplers import torch; the configs do not (so `--help` can show their defaults fast).
_LAZY = {
    "FlexMDMSampler": "retrofit.sampling.flexmdm",
    "MDMSampler": "retrofit.sampling.mdm",
    "SampleOutput": "retrofit.sampling.trace",
    "Trace": "retrofit.sampling.trace",
    "plot_trace": "retrofit.sampling.trace",
}

__all__ = [
    "FlexMDMSampler",
    "FlexMDMSamplerConfig",
    "MDMSampler",
    "MDMSamplerConfig",
    "SampleOutput",
    "Trace",
    "plot_trace",
]


def __getattr__(name: str) -> Any:
    """Import a sampler on first use (PEP 562)."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'retrofit.sampling' has no attribute {name!r}")
