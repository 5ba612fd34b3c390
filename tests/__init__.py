"""probekit's test suite. A regular package (not a namespace one) so `tests.*` imports find these files
even when a third-party distribution installs a top-level `tests` package (dcase_util, pulled in by sed_eval,
does)."""
