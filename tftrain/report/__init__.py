"""Runs side by side: `python -m tftrain.report <run or sweep dirs...>` (compare: the tables;
render: the figures and report.html)."""

__all__ = ["compare_runs"]


def __getattr__(name):  # PEP 562
    if name in ("compare_runs", "report"):
        from tftrain.report.compare import report

        return report
    raise AttributeError(f"module 'tftrain.report' has no attribute {name!r}")
