"""Background jobs: a queue of DB rows claimed atomically by worker processes (fine-tuning, evaluation, audits)."""
