"""Sorting: the sort-benchmark record tools (gensort, valsort) and, later, the sort engine."""
