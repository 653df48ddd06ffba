"""A bench-only Django app: the plain baseline of ``python -m bench.api``.

A plain DRF view on a plain ORM model doing what the accounts API does (read
an account; add a deposit to its balance), served by the same process, so the
bench can print the accounts API's requests per second as a ratio of it.
Installed only by ``bench.apibaseline.settings``; its table is made by
``migrate --run-syncdb`` (it has no migrations).
"""
