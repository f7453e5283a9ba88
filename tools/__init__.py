"""Console entry points (`qtrain-opt`, ...) and benchmark scripts."""
