"""Training and evaluation engine: metrics, the evaluator and the training loop."""
