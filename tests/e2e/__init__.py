"""End-to-end tests: the whole path, under bad input, faults and load (issue 7)."""
