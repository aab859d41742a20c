"""Tabular methods: configurable grid worlds, dynamic programming, TD control."""
