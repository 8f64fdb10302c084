"""Speed and memory benchmarks (``make bench``); results are JSON on stdout."""
