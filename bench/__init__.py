"""Benchmarks of imgurd (issue 5): ``python -m bench``. See bench/README.md."""
