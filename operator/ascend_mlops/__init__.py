"""ascend-mlops: train, convert and serve image classifiers on Huawei Ascend 310 from Kubernetes."""

__version__ = "0.1.0"
