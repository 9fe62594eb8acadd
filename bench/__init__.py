"""exectrack benchmarks: ``python -m bench.producer`` (results land in bench/results/)."""
