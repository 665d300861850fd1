//go:build race

package inprocess_test

// raceDetector: protoactor's members race on globals in one process.
const raceDetector = true
