#!/usr/bin/env bash
# Regenerate the kubelet device plugin API's Python messages
# (operator/ascend_mlops/ascend/deviceplugin/api_pb2.py and .pyi) from api.proto.
#
# The generated code is committed, so neither the package nor CI needs a
# protobuf compiler. It is generated with the grpcio-tools whose bundled protoc
# matches the oldest protobuf runtime pyproject.toml allows (protobuf>=6.31.1,
# the same floor as tensorflow-cpu): generated code refuses an older runtime,
# and newer runtimes load older generated code. The gRPC service glue is not
# generated (see deviceplugin/protocol.py), so no grpcio version is baked in.
#
#   scripts/gen-deviceplugin-proto.sh
#
# tests/deviceplugin/test_protocol.py checks that the committed descriptor is
# the one api.proto compiles to.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GRPCIO_TOOLS_VERSION=1.75.1  # bundles protoc for protobuf 6.31.1
DIR=operator/ascend_mlops/ascend/deviceplugin

tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python -m pip install --quiet --disable-pip-version-check --no-deps --target "$tools" "grpcio-tools==$GRPCIO_TOOLS_VERSION"
# The source root as proto path: the descriptor is registered as
# ascend_mlops/ascend/deviceplugin/api.proto, a name no other package uses.
PYTHONPATH="$tools" python -m grpc_tools.protoc --proto_path=operator --python_out=operator --pyi_out=operator "$DIR/api.proto"
echo "regenerated $DIR/api_pb2.py and $DIR/api_pb2.pyi from $DIR/api.proto"
