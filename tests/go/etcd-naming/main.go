// A peer for jovian's tests built on etcd's gRPC naming package and a stock grpc-go, as its
// documentation shows them: a server registering with `endpoints.Manager.AddEndpoint` on a
// lease it keeps alive, a client dialing `etcd:///{target}` through `naming/resolver`.
//
//	etcd-naming server -etcd 127.0.0.1:2379 -target greeter [-ttl 10]
//	    serves helloworld.Greeter on 127.0.0.1, writes `{target}/{addr}`, prints "serving
//	    ADDR", and on SIGTERM deletes its endpoint and stops. SayHello replies "ADDR go".
//	etcd-naming client -etcd 127.0.0.1:2379 -target greeter [-calls N] [-interval D]
//	    calls SayHello on `etcd:///{target}` (round robin) N times (0: until killed),
//	    printing "ok MESSAGE" or "err CODE MESSAGE" for each call.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: etcd-naming server|client [flags]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	etcd := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma separated")
	target := flags.String("target", "greeter", "the naming target")
	ttl := flags.Int64("ttl", 10, "server: the lease's TTL in seconds")
	calls := flags.Int("calls", 1, "client: calls to make, 0 for until killed")
	interval := flags.Duration("interval", 0, "client: pause between calls")
	flags.Parse(os.Args[2:])

	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcd, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fmt.Println("etcd:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	switch os.Args[1] {
	case "server":
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		addr := listener.Addr().String()
		server := grpc.NewServer()
		server.RegisterService(&greeterDesc, greeter{addr})
		go server.Serve(listener)
		manager, err := endpoints.NewManager(cli, *target)
		if err != nil {
			fmt.Println("manager:", err)
			os.Exit(1)
		}
		lease, err := cli.Grant(ctx, *ttl)
		if err != nil {
			fmt.Println("grant:", err)
			os.Exit(1)
		}
		key := *target + "/" + addr
		if err := manager.AddEndpoint(ctx, key, endpoints.Endpoint{Addr: addr}, clientv3.WithLease(lease.ID)); err != nil {
			fmt.Println("add endpoint:", err)
			os.Exit(1)
		}
		alive, err := cli.KeepAlive(ctx, lease.ID)
		if err != nil {
			fmt.Println("keep alive:", err)
			os.Exit(1)
		}
		go func() {
			for range alive {
			}
		}()
		fmt.Println("serving", addr)
		stop := make(chan os.Signal, 1)
		signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
		<-stop
		manager.DeleteEndpoint(ctx, key)
		server.GracefulStop()
	case "client":
		builder, err := resolver.NewBuilder(cli)
		if err != nil {
			fmt.Println("resolver:", err)
			os.Exit(1)
		}
		conn, err := grpc.NewClient("etcd:///"+*target,
			grpc.WithResolvers(builder),
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultServiceConfig(`{"loadBalancingPolicy":"round_robin"}`))
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		run(conn, *calls, *interval)
	default:
		fmt.Fprintln(os.Stderr, "usage: etcd-naming server|client [flags]")
		os.Exit(2)
	}
}
