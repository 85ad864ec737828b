"""A SIMULATED Ascend device plugin for clusters without NPUs (kind, minikube, k3s, CI).

It speaks the kubelet device plugin API `v1beta1` over gRPC (`protocol`,
messages generated from `api.proto`), advertises simulated Ascend devices
as the extended resource Huawei's plugin uses (`huawei.com/Ascend310`), and
answers `Allocate` with `ASCEND_VISIBLE_DEVICES` as Huawei's plugin does, which
the pyACL simulator reads to pick its simulated device (`visible`). On nodes
with Ascend NPUs, Huawei's own device plugin is the one to run.

Only `visible` is importable without grpcio; the rest needs the
`deviceplugin` extra (`pip install 'ascend-mlops[deviceplugin]'`).
"""
