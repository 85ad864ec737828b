"""Tests of the workloads that run inside pods."""
