// Package rqd is cuesched's wire-compatible client stub for OpenCue's render
// host daemon (RQD): a minimal rqd.proto of our own and the Go code generated
// from it, committed so that a build needs no protoc.
//
// Regenerate with protoc, protoc-gen-go v1.36.12 and protoc-gen-go-grpc v1.6.2.
package rqd

//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative rqd.proto
