"""What runs inside the operator's pods: trainer, converter, server.

Workloads depend on `ascend_mlops.api` only; they never import the operator.
"""
