"""Example data sets and their configs, shipped with the package for ``shipml quickstart``."""
