"""The model pipeline: one module per DVC stage (dvc.yaml), each a pure function plus a thin main()."""
