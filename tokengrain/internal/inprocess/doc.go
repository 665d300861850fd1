// Package inprocess holds tests that run several cluster members in one
// process, where a test can share in-memory fakes and a store between
// them. protoactor's cluster is not meant for that: members in one
// process race on globals (grpclog's logger, the remote's block list) and
// leave throttle goroutines running for a while after shutdown. So these
// tests skip under the race detector, ignore those goroutines, and CI
// runs them in a separate pass without -race (.ci/run). The cluster's
// own behaviour is tested with member processes in package tokengrain.
package inprocess
