"""Test helpers shared by the test suites: generated datasets, an HTTP server, process fixtures."""
