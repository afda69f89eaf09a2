"""Figures: score densities with threshold lines, and image grids of matched pairs."""
