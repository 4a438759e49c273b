"""The atlas data format: write, read, validate; export from stage outputs; importers."""
