"""Evaluation: lm-eval tasks of reasoning benchmarks, scoring, the evaluate() entry point and reports."""
