//go:build tools

// Package tools pins the Go programs the interop tests build: grpc-go's interop client and
// server, and h2spec. Nothing here is compiled; the imports keep them in go.mod and go.sum.
package tools

import (
	_ "github.com/summerwind/h2spec/cmd/h2spec"
	_ "google.golang.org/grpc/interop/client"
	_ "google.golang.org/grpc/interop/server"
)
