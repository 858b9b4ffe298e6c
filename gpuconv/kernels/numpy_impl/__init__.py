"""numpy_impl implementations, one module per op family."""
