// Command slowserver is grpc-go's interop TestService on a server with grpc-go's default
// settings (keepalive enforcement included), whose UnaryCall first sleeps for as long as the
// call's "x-sleep-ms" metadata says. grpc-go's own interop server has no slow unary method,
// and the jovian tests need one to check that a quiet unary call survives grpc-go's defaults.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
)

type slow struct {
	testgrpc.TestServiceServer
}

func (s slow) UnaryCall(ctx context.Context, in *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md["x-sleep-ms"]) > 0 {
		ms, err := strconv.Atoi(md["x-sleep-ms"][0])
		if err != nil {
			return nil, err
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.TestServiceServer.UnaryCall(ctx, in)
}

func main() {
	port := flag.Int("port", 10000, "the port to listen on (127.0.0.1)")
	flag.Parse()
	lis, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		panic(err)
	}
	server := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(server, slow{interop.NewTestServer()})
	fmt.Printf("listening on %v\n", lis.Addr())
	server.Serve(lis)
}
