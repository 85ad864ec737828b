"""`ascend-mlops serve`: the inference HTTP server that InferenceService pods run.

Layout, after KServe's model server: `backends/` load and run a model (pyACL on
an Ascend NPU or its simulator, or TensorFlow on the CPU); `processing` turns
image bytes into the model's input and logits into labelled scores; `batching`
merges concurrent requests; `app` is the HTTP layer that maps domain errors
(`errors`) to status codes; `metrics` holds the Prometheus series; `cli` parses
the command line and runs the lifecycle (load, serve, drain on SIGTERM).
"""
