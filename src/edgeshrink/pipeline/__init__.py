"""`compress` and what it is made of: the stage context, pre-flight checks, the run log, the check of
the written file."""

from edgeshrink.pipeline.run import CompressResult, compress

__all__ = ["CompressResult", "compress"]
