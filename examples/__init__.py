"""Runnable examples: `examples/demo_tour.py` (make demo) and the `examples.render` orchestrator."""
