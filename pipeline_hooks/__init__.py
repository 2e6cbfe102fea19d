"""Adapters between the CSST pipeline scheduler and the csst_sls_z stage (docs/pipeline.md).

The hook module is imported on first use of its names, not here: ``python -m
pipeline_hooks.csst_sls_z_hook`` must find it absent from ``sys.modules`` when runpy
executes it (else runpy warns on every call).
"""
__all__ = ["run_stage", "CsstSlsZProcessor"]


def __getattr__(name):
    if name in __all__:
        from . import csst_sls_z_hook
        return getattr(csst_sls_z_hook, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
