"""The shared interface of ascend-mlops.

Everything that both the operator and the workloads (trainer, converter,
server) must agree on lives here and only here: the API group and kinds,
condition types and reasons, the workload command lines, exit codes,
artifact layout, and the shape of the termination-message summaries.

This package imports nothing heavy (no TensorFlow, no Kubernetes client), so
both sides can depend on it.
"""
