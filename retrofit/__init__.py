"""retrofit: turn pretrained LLaDA masked-diffusion LMs into FlexMDMs."""

import logging as _logging

__version__ = "0.1.0"


class _DropDeepSpeedAcceleratorBanner(_logging.Filter):
    """Drop DeepSpeed's accelerator-detection banner ("Setting accelerator to CPU. If you have GPU
    ...", "Setting ds_accelerator to cpu (auto detect)"), logged whenever `deepspeed` is imported
    (transformers / accelerate import it even for runs without DeepSpeed). Its other messages pass.
    """

    def filter(self, record: _logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("Setting accelerator to CPU", "Setting ds_accelerator to"))


# The "DeepSpeed" logger object is created here if deepspeed is not imported yet; deepspeed's own
# setup later configures the same object, so the filter stays attached.
_logging.getLogger("DeepSpeed").addFilter(_DropDeepSpeedAcceleratorBanner())
