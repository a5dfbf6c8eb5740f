"""Recognising enrolled faces, to keep them visible (allow-list) or to hide only them (deny-list).

Kept light: the embedder's worker process imports this package, and it must not pull in the service.
"""
