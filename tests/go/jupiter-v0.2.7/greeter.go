package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// helloworld.Greeter by hand: HelloRequest and HelloReply are each one string field 1, the
// same bytes on the wire as a StringValue, so no generated code is needed.
type greeterService interface {
	SayHello(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var greeterDesc = grpc.ServiceDesc{
	ServiceName: "helloworld.Greeter",
	HandlerType: (*greeterService)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "SayHello",
		Handler: func(srv interface{}, ctx context.Context, dec func(interface{}) error, interceptor grpc.UnaryServerInterceptor) (interface{}, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(ctx context.Context, req interface{}) (interface{}, error) {
				return srv.(greeterService).SayHello(ctx, req.(*wrapperspb.StringValue))
			}
			if interceptor == nil {
				return handler(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/helloworld.Greeter/SayHello"}, handler)
		},
	}},
	Metadata: "helloworld.proto",
}

// greeter replies with its address, so tests see which instance answered.
type greeter struct{ addr string }

func (g greeter) SayHello(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return &wrapperspb.StringValue{Value: g.addr + " go"}, nil
}

// run calls SayHello `calls` times (0: forever), one line of output a call.
func run(conn *grpc.ClientConn, calls int, interval time.Duration) {
	for i := 0; calls == 0 || i < calls; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		out := new(wrapperspb.StringValue)
		err := conn.Invoke(ctx, "/helloworld.Greeter/SayHello", &wrapperspb.StringValue{Value: "go"}, out)
		cancel()
		if err != nil {
			s := status.Convert(err)
			fmt.Printf("err %s %s\n", s.Code(), s.Message())
		} else {
			fmt.Printf("ok %s\n", out.GetValue())
		}
		time.Sleep(interval)
	}
}
