"""Adapters between the CSST pipeline scheduler and the csst_sls_z stage (docs/pipeline.md)."""
from .csst_sls_z_hook import CsstSlsZProcessor, run_stage

__all__ = ["run_stage", "CsstSlsZProcessor"]
