"""Analyses over budgets and traces: diff, graph diagnostics, roofline, HTA."""
