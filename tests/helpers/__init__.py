"""Helpers shared by the test packages (servers on free loopback ports, ...)."""
