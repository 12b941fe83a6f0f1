"""The ask/tell study loop, the worker, replay across GPUs, and gathering a stored trial for export."""
