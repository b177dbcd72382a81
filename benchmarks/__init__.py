"""
Side-by-side benchmarks of classic Perspective Broker and pbext.

Run C{python benchmarks/run.py --quick}; C{benchmarks/README.rst} says what
each workload measures and how to read the ratios.  Nothing here is part of
the installed C{pbext} package.
"""
