#!/usr/bin/env bash
# Regenerates token.pb.go from token.proto without a protoc binary:
# buf (pinned) compiles the proto, and protoc-gen-go is built from the
# module's own google.golang.org/protobuf, so the generated code matches
# the runtime it links against.
set -euo pipefail
cd "$(dirname "$0")"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
GOBIN="$bin" GOFLAGS= go install github.com/bufbuild/buf/cmd/buf@v1.75.0
go build -o "$bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
PATH="$bin:$PATH" buf generate
