"""The review store: candidates that match a profile, what people decided, and who did what.

One schema on SQLite (a single WAL file, R*Tree bbox index) and PostgreSQL + PostGIS
(GiST index), created and upgraded by alembic migrations when a store is opened.

* :mod:`~geoscreen.review.store`: ``open_store(path_or_url, create=False) -> Store``;
  ``Store.candidate / candidates / in_bbox / count / history / frame``, ``CandidateFilter``.
* :mod:`~geoscreen.review.loader`: ``load_sites(store, path, profile=, run_id=, actor=)``,
  idempotent and crash-safe (one transaction per run).
* :mod:`~geoscreen.review.workflow`: ``set_status(store, id, status, user=, reason=,
  expected_version=, claim=)`` and ``add_note``; optimistic versions, ``ConflictError``.
* :mod:`~geoscreen.review.audit`: hash-chained, append-only log: ``append``, ``log``,
  ``record_view``, ``entries``, ``verify``.
* :mod:`~geoscreen.review.export`: ``export_candidates(store, out, user=, redaction=,
  where=, format=, area=, regions=, seed=)``; :mod:`~geoscreen.review.redaction` holds
  the geomasking and aggregation.
* :mod:`~geoscreen.review.users`: ``add_user``, ``list_users``, ``set_active``,
  ``set_password``, ``authenticate``, ``require_user``.

Nothing is imported here, so ``import geoscreen.review.records`` stays cheap for the CLI.
"""
