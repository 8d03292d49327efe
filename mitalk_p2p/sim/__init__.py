"""Drivers that run the sans-I/O core on a virtual clock."""
