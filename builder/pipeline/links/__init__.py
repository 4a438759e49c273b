"""`atlas link`: features of two atlases built on the same cells (or of an atlas and its untrained twin) matched by
their per-cell activation profiles, beside a within-cell-type shuffle and the other model's untrained twin.

source.py finds each atlas' cells and codes in its build cache and turns codes into per-cell profiles; correlate.py
streams the correlation of every pair of features and keeps each feature's best partners; stats.py holds the tests;
run.py puts them together into the rows and records that atlas/links.py writes into both atlases.
"""
