"""Benchmarks of the event store, each printing ratios against baselines run beside it.

``python -m bench`` measures appends and aggregate loads against raw psycopg
and naive Django ORM doing the same work, in a database of its own that it
creates, migrates and drops. See ``bench/__main__.py`` for the options.
"""
