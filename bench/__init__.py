"""Benchmarks: Tusk measured side by side with a baseline in the same run. Not tests; see
bench/README.md. Run them all with `make bench` (`python -m bench`)."""
