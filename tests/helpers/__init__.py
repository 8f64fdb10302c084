"""Test helpers shared by Orchard's test suites (generated datasets, a local HTTP server)."""
