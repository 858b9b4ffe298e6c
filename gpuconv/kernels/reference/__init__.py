"""reference implementations, one module per op family."""
