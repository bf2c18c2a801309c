"""One step at a time through the verified cache: the run session, cache policy and Prefect tasks."""
