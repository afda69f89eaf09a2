"""Whole jobs that compose the layers below: variability, leakage, closest pairs and the demo.

The CLI and the paper's scripts call these (and public library functions) only.
"""
