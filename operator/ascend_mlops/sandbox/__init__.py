"""The sandbox: the whole flow on one machine (embedded API, the real operator, a local kubelet)."""
