// Package tokenpb holds the protobuf messages between cluster members and
// an identity's token grain (package tokengrain). token.pb.go is generated
// from token.proto; never edit it by hand. Regenerate it with
//
//	./tokengrain/tokenpb/generate.sh
//
// which needs only Go and the module proxy: buf v1.75.0 compiles the proto
// (no protoc binary) and protoc-gen-go is built from the
// google.golang.org/protobuf version in go.mod.
package tokenpb
