"""The embedded default: one local Prefect server per home, the warm executor, and which API to use."""
