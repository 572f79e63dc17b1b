"""The reliability catalogue (the project's RELIABILITY.md) as tests against real processes."""
