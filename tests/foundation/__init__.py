"""Tests of the foundation: configuration, logging, errors, command line, packaging."""
