"""Trace reading: streaming Kineto/Chrome loader, GPU attribution, budgets, kernel classes."""
