"""The Fine-Tune tab's sub-panels: dashboard, datasets, new-job wizard, jobs monitor (wiring only)."""
