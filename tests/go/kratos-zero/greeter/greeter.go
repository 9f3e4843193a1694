// Package greeter is helloworld.Greeter/SayHello (examples/proto/helloworld.proto) without
// generated code: HelloRequest{name = 1} and HelloReply{message = 1} are, on the wire,
// wrapperspb.StringValue{value = 1}, so a hand-written service description serves and calls
// the same method jovian's examples do. It also holds the client loop both peers run.
package greeter

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Method is the full name of the one method.
const Method = "/helloworld.Greeter/SayHello"

// Server answers SayHello.
type Server interface {
	SayHello(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

// Desc describes helloworld.Greeter for grpc.Server.RegisterService.
var Desc = grpc.ServiceDesc{
	ServiceName: "helloworld.Greeter",
	HandlerType: (*Server)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "SayHello", Handler: handle}},
	Metadata:    "helloworld.proto",
}

func handle(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	in := new(wrapperspb.StringValue)
	if err := dec(in); err != nil {
		return nil, err
	}
	call := func(ctx context.Context, req any) (any, error) {
		return srv.(Server).SayHello(ctx, req.(*wrapperspb.StringValue))
	}
	if interceptor == nil {
		return call(ctx, in)
	}
	return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: Method}, call)
}

// Greeter answers "Hello {name} from {Address}", as jovian's example Greeter does, so a
// client sees which instance served it.
type Greeter struct{ Address string }

// SayHello implements Server.
func (g Greeter) SayHello(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(fmt.Sprintf("Hello %s from %s", in.GetValue(), g.Address)), nil
}

// Call makes one SayHello call on conn and returns the address that answered.
func Call(ctx context.Context, conn grpc.ClientConnInterface, name string) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, Method, wrapperspb.String(name), out); err != nil {
		return "", err
	}
	message := out.GetValue()
	return message[strings.LastIndex(message, " from ")+len(" from "):], nil
}

// Load calls SayHello from `callers` goroutines back to back until `duration` has passed, or
// until `enough` calls have succeeded (0: no such limit). It prints `first ADDR` the first time
// an address answers, `fail UNIX_MS ERROR` for every failed call, then one line
// `summary {"ok":{ADDR:N,...},"failed":N}`, and returns whether any call succeeded.
func Load(conn grpc.ClientConnInterface, who string, callers int, duration time.Duration, enough int) bool {
	var (
		mu     sync.Mutex
		ok     = map[string]int{}
		failed int
		total  int
		wg     sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	end, _ := ctx.Deadline()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				call, done := context.WithTimeout(ctx, 2*time.Second)
				addr, err := Call(call, conn, who)
				done()
				if err != nil && (ctx.Err() != nil || !time.Now().Before(end)) {
					// The load ended under the call (grpc-go may fail it with
					// DeadlineExceeded a moment before the context says so): not its failure.
					return
				}
				mu.Lock()
				if err != nil {
					failed++
					fmt.Printf("fail %d %v\n", time.Now().UnixMilli(), err)
				} else {
					if ok[addr] == 0 {
						fmt.Printf("first %s\n", addr)
					}
					ok[addr]++
					total++
					if enough > 0 && total >= enough {
						cancel()
					}
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(time.Millisecond) // a caller that fails fast must not spin
				}
			}
		}()
	}
	wg.Wait()
	summary, _ := json.Marshal(map[string]any{"ok": ok, "failed": failed})
	fmt.Printf("summary %s\n", summary)
	os.Stdout.Sync()
	return total > 0
}
