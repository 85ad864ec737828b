"""Pure builders: typed spec in, Kubernetes manifest dicts out. No API calls, no clock."""
