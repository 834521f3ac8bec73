"""The runs wing: a run (params in; run folder, report, verdict out), make bench, notebooks."""
