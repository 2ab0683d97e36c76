"""Resources (issue 20): what the machine, each job and each model use; disk; costs; Prometheus metrics."""
