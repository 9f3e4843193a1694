// A peer for jovian's tests built on Go jupiter v0.2.7 (the release jovian's default etcd
// layout was modelled on), using jupiter's own pieces: its gRPC server (xgrpc), its etcdv3
// registry, its gRPC client and resolver.
//
//	jupiter server -etcd 127.0.0.1:2379 -name greeter [-prefix jovian]
//	    serves helloworld.Greeter on 127.0.0.1, registers it, prints "serving ADDR", and on
//	    SIGTERM unregisters and stops. SayHello replies "ADDR jupiter".
//	jupiter client -etcd 127.0.0.1:2379 -name greeter [-prefix jovian] [-calls N] [-interval D]
//	    resolves etcd:///greeter through jupiter's registry and calls SayHello N times (0:
//	    until killed), printing "ok MESSAGE" or "err CODE MESSAGE" for each call.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/douyu/jupiter/pkg"
	grpcclient "github.com/douyu/jupiter/pkg/client/grpc"
	"github.com/douyu/jupiter/pkg/client/grpc/resolver"
	"github.com/douyu/jupiter/pkg/registry/etcdv3"
	"github.com/douyu/jupiter/pkg/server/xgrpc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: jupiter server|client [flags]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoints := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma separated")
	name := flags.String("name", "greeter", "the service name")
	prefix := flags.String("prefix", "jovian", "the registry's key prefix")
	calls := flags.Int("calls", 1, "client: calls to make, 0 for until killed")
	interval := flags.Duration("interval", 0, "client: pause between calls")
	flags.Parse(os.Args[2:])

	reg := etcdv3.DefaultConfig()
	reg.Endpoints = strings.Split(*endpoints, ",")
	reg.Prefix = *prefix
	// jupiter's App sets one; with 0 the keys would be written with no lease at all.
	reg.ServiceTTL = 10 * time.Second
	registry := reg.Build()

	switch os.Args[1] {
	case "server":
		pkg.SetName(*name)
		config := xgrpc.DefaultConfig()
		config.Host = "127.0.0.1"
		config.Port = 0
		server := config.Build()
		info := server.Info()
		server.RegisterService(&greeterDesc, greeter{info.Address})
		go server.Serve()
		if err := registry.RegisterService(context.Background(), info); err != nil {
			fmt.Println("register failed:", err)
			os.Exit(1)
		}
		fmt.Println("serving", info.Address)
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		registry.UnregisterService(context.Background(), info)
		server.Stop()
	case "client":
		resolver.Register("etcd", registry)
		config := grpcclient.DefaultConfig()
		config.Address = "etcd:///" + *name
		config.Block = false
		// One log line a call is noise at the thousands of calls the tests make.
		config.DisableAccessInterceptor = true
		conn := config.Build()
		run(conn, *calls, *interval)
	default:
		fmt.Fprintln(os.Stderr, "usage: jupiter server|client [flags]")
		os.Exit(2)
	}
}
