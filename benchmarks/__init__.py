"""apl's benchmarks, run from the root of a source checkout as modules, e.g.
`python -m benchmarks.bench_loss --quick`; each writes its results under benchmarks/results/."""
