"""The Safety tab's sub-panels: scan, policy, audits, review, compare (wiring only)."""
