"""Samplers: FlexMDM tau-leaping (insert + unmask) and the LLaDA masked-diffusion baseline.

    from retrofit.sampling import FlexMDMSampler, FlexMDMSamplerConfig, MDMSampler, MDMSamplerConfig
    out = FlexMDMSampler(model).sample([prompt_ids])

`retrofit.sampling.load.load_model(folder)` loads either kind of folder; the `retrofit generate`
and `retrofit infill` verbs wrap both samplers.
"""

from retrofit.sampling.flexmdm import FlexMDMSampler, FlexMDMSamplerConfig
from retrofit.sampling.mdm import MDMSampler, MDMSamplerConfig
from retrofit.sampling.trace import SampleOutput, Trace, plot_trace

__all__ = [
    "FlexMDMSampler",
    "FlexMDMSamplerConfig",
    "MDMSampler",
    "MDMSamplerConfig",
    "SampleOutput",
    "Trace",
    "plot_trace",
]
