"""cgrad.monitor: training telemetry recorded to a run file.

    with cgrad.monitor.Run("runs/", name="mlp") as run:
        run.watch(model, optimizer)      # every optimizer.step() is recorded
        ...

Files are SQLite in WAL mode (docs/run_format.md); cgrad.monitor.reader
reads them incrementally, and the cgrad-monitor app shows them live.
"""
from cgrad.monitor.schema import SCHEMA_VERSION, RunFileError
from cgrad.monitor.run import Run
from cgrad.monitor.reader import RunDelta, RunReader, RunStatus, list_runs
from cgrad.monitor.stats import grad_stats

__all__ = ["Run", "RunFileError", "RunReader", "RunDelta", "RunStatus", "list_runs", "grad_stats",
           "SCHEMA_VERSION"]
