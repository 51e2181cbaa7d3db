"""Measuring what a loop buys: `loopcpp eval` and `loopcpp tune` as a Python API.

    from loopcpp import Model
    from loopcpp.evals import TaskSpec, evaluate, summarize, format_table

    with Model("model.gguf") as model:
        result = evaluate(model, ["auto", "autox4,euler"], TaskSpec("arc_easy", limit=200))
        print(format_table(summarize(result)))

Every run scores the unlooped model and every loop on the same items and reports paired
differences with 95 % intervals (see stats.py).
"""

from .report import format_table, summarize, write_csv
from .runner import OFF, TaskResult, TaskSpec, evaluate

__all__ = ["OFF", "TaskResult", "TaskSpec", "evaluate", "format_table", "summarize", "write_csv"]
