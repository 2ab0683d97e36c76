"""The Evaluate tab's panels: new run, results, experiments, plugins (wired together in ``evaluate_tab``)."""
