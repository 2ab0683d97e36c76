"""Notifications (issue 20): an in-app notification centre and outgoing webhooks for jobs, evaluations, audits,
deployments and the disk."""
