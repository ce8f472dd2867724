//! Benchmark support for portcullis (see BENCHMARKS.md).
