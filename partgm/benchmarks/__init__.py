"""Speed benchmarks: sampling and training throughput."""
