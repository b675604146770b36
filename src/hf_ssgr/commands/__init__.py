"""The hf-ssgr command line."""
