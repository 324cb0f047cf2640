"""paretoforge: Pareto-optimal deployable transformers for the hardware they run on."""
