"""Background jobs: plain functions taking ids, one module per job, idempotent."""
