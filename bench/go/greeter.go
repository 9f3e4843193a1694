package main

// The helloworld Greeter (examples/proto/helloworld.proto) without generated code: generating
// it would take protoc and two protoc plugins at build time, or generated files to keep in
// step with grpc-go. Instead the two one-string messages are encoded by hand in the protobuf
// wire format and the service is described the way protoc-gen-go-grpc would describe it. On
// the wire it is the same service tonic serves.
//
// The hand codec does less work than generated code would (no reflection), so if anything it
// flatters grpc-go; against a call of tens of microseconds it is noise.

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

const sayHello = "/helloworld.Greeter/SayHello"

// helloRequest is helloworld.HelloRequest: field 1, name.
type helloRequest struct{ Name string }

// helloReply is helloworld.HelloReply: field 1, message.
type helloReply struct{ Message string }

// oneString is a message whose only field is string field 1.
type oneString interface{ field() *string }

func (m *helloRequest) field() *string { return &m.Name }
func (m *helloReply) field() *string   { return &m.Message }

// codec takes over grpc-go's "proto" codec for these two messages and hands every other
// message (the etcd client's, in the same process) to the codec it replaced.
type codec struct{ base encoding.CodecV2 }

func (codec) Name() string { return "proto" }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(oneString)
	if !ok {
		return c.base.Marshal(v)
	}
	s := *m.field()
	if s == "" {
		return nil, nil // proto3 leaves a default field out
	}
	b := protowire.AppendTag(make([]byte, 0, len(s)+8), 1, protowire.BytesType)
	// Small, like grpc-go's own codec's below its pooling threshold: a plain slice.
	return mem.BufferSlice{mem.SliceBuffer(protowire.AppendString(b, s))}, nil
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(oneString)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	// grpc-go frees data when this returns: the string is copied out of it, as
	// protobuf-go's generated code would copy it.
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return unmarshalOneString(buf.ReadOnlyData(), m)
}

func unmarshalOneString(data []byte, m oneString) error {
	*m.field() = ""
	for len(data) > 0 {
		num, typ, n := protowire.ConsumeTag(data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
		if num == 1 && typ == protowire.BytesType {
			s, n := protowire.ConsumeString(data)
			if n < 0 {
				return protowire.ParseError(n)
			}
			*m.field() = s
			data = data[n:]
			continue
		}
		// Unknown fields are skipped, as generated code would.
		n = protowire.ConsumeFieldValue(num, typ, data)
		if n < 0 {
			return protowire.ParseError(n)
		}
		data = data[n:]
	}
	return nil
}

// Runs after grpc-go's own init has registered its proto codec, which becomes the fallback.
func init() { encoding.RegisterCodecV2(codec{base: encoding.GetCodecV2("proto")}) }

// greeter answers "Hello NAME from ADDRESS", like the jovian example greeter, so the bench can
// tell which instance answered.
type greeter struct{ address string }

func sayHelloHandler(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	in := new(helloRequest)
	if err := dec(in); err != nil {
		return nil, err
	}
	return &helloReply{Message: "Hello " + in.Name + " from " + srv.(*greeter).address}, nil
}

var greeterDesc = grpc.ServiceDesc{
	ServiceName: "helloworld.Greeter",
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "SayHello", Handler: sayHelloHandler}},
	Streams:     []grpc.StreamDesc{},
	Metadata:    "helloworld.proto",
}
