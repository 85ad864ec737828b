"""`ascend-mlops predict`: a BatchPrediction pod's shard of a folder or `.manifest` of images.

It runs the server's own backends and pre-/post-processing
(`workloads.server.backends`, `workloads.server.processing`) and writes
ModelArts' batch-service layout (see `api.contract` and docs/batch.md).
"""
