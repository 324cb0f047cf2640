"""Test support for tests and benchmarks (as ``optuna.testing``); nothing else imports it."""
