"""qtrain: compile a quantized CNN into C that fine-tunes it on a Cortex-M microcontroller."""

__version__ = "0.1.0"
