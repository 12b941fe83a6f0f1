"""What a configuration means as diffusers calls, as data: quantization configs, compile and process settings.

Read by ``measure.backends`` (which makes the calls) and by ``export`` (which writes them). Imports only ``core``."""
