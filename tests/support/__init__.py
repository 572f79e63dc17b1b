"""Helpers shared by the test modules (test modules never import each other); the fixtures built on them
reach every module through tests/conftest.py (``pytest_plugins``)."""
