"""The adapter contract suite: every framework adapter against one set of checks."""
