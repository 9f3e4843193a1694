// A go-zero peer for jovian's tests: a zrpc server serving helloworld.Greeter, published in
// etcd by go-zero's own discovery (core/discov, zrpc's `Etcd` config), and a zrpc client that
// finds its servers through it (go-zero's etcd resolver and its default p2c_ewma balancer).
//
//	gozero server -etcd HOST:PORT -key KEY -listen 127.0.0.1:PORT [-id N]
//	gozero client -etcd HOST:PORT -key KEY [-callers N] [-for DURATION] [-enough N]
//
// The server prints `listening HOST:PORT`, then publishes and serves until SIGTERM or
// SIGKILL. The client prints what greeter.Load prints and exits 0 when a call succeeded.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/zeromicro/go-zero/core/conf"
	"github.com/zeromicro/go-zero/core/discov"
	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"

	"jovian.invalid/peers/kratos-zero/greeter"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: gozero server|client [flags]")
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoints := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	key := flags.String("key", "greeter", "go-zero's Etcd.Key (the service name)")
	listen := flags.String("listen", "127.0.0.1:8080", "the server's ListenOn")
	id := flags.Int64("id", 0, "go-zero's Etcd.ID (0: the lease id, go-zero's default)")
	callers := flags.Int("callers", 1, "concurrent callers")
	duration := flags.Duration("for", 10*time.Second, "how long the client calls")
	enough := flags.Int("enough", 0, "stop after this many successful calls (0: run -for)")
	_ = flags.Parse(os.Args[2:])
	etcd := discov.EtcdConf{Hosts: strings.Split(*endpoints, ","), Key: *key, ID: *id}
	logx.DisableStat()

	switch os.Args[1] {
	case "server":
		var c zrpc.RpcServerConf
		if err := conf.FillDefault(&c); err != nil {
			fail("defaults: %v", err)
		}
		c.Name = "gozero-peer"
		c.Log.Mode = "console"
		c.Log.Level = "error"
		c.ListenOn = *listen
		c.Etcd = etcd
		// go-zero's load shedder answers calls with ResourceExhausted when the machine's CPU
		// is over 90%: the tests' machine is shared and busy, and that is not under test.
		c.CpuThreshold = 0
		server := zrpc.MustNewServer(c, func(s *grpc.Server) {
			s.RegisterService(&greeter.Desc, greeter.Greeter{Address: *listen})
		})
		fmt.Printf("listening %s\n", *listen)
		server.Start()
	case "client":
		var c zrpc.RpcClientConf
		if err := conf.FillDefault(&c); err != nil {
			fail("defaults: %v", err)
		}
		c.Etcd = etcd
		client, err := zrpc.NewClient(c)
		if err != nil {
			fail("client: %v", err)
		}
		if !greeter.Load(client.Conn(), "go-zero", *callers, *duration, *enough) {
			os.Exit(1)
		}
	default:
		fail("unknown command %q: server or client", os.Args[1])
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(2)
}
