"""Hashing, keys, code versions, environment, the home layout and errors: what every layer builds on."""
