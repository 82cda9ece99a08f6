"""Sorting: the sort engine (WiscSort) and the sort-benchmark record tools (gensort, valsort)."""

from bas.sort.engine import SCHEDULES, sort
from bas.sort.plan import ALGORITHMS
from bas.sort.report import Phase, SortReport

__all__ = ["ALGORITHMS", "SCHEDULES", "Phase", "SortReport", "sort"]
