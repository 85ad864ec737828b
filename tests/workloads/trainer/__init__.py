"""Tests of `ascend-mlops train`."""
