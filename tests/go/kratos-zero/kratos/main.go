// A go-kratos v2 peer for jovian's tests: a kratos App serving helloworld.Greeter on a kratos
// gRPC server, registered through kratos' own etcd registry (contrib/registry/etcd), and a
// kratos gRPC client that finds its servers through that registry.
//
//	kratos server -etcd HOST:PORT -name NAME [-listen HOST:PORT] [-id ID] [-version V] [-meta k=v,k=v]
//	kratos client -etcd HOST:PORT -name NAME [-callers N] [-for DURATION] [-enough N]
//
// The server prints `listening HOST:PORT` once it has bound, then serves and stays registered
// until SIGTERM or SIGKILL. The client prints what greeter.Load prints and exits 0 when a
// call succeeded.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	etcd "github.com/go-kratos/kratos/contrib/registry/etcd/v2"
	"github.com/go-kratos/kratos/v2"
	"github.com/go-kratos/kratos/v2/log"
	"github.com/go-kratos/kratos/v2/transport/grpc"
	clientv3 "go.etcd.io/etcd/client/v3"

	"jovian.invalid/peers/kratos-zero/greeter"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: kratos server|client [flags]")
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoints := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	name := flags.String("name", "greeter", "the service name")
	listen := flags.String("listen", "127.0.0.1:0", "the server's address (kratos' grpc.Address)")
	id := flags.String("id", "", "the instance id (kratos' default: a fresh UUID)")
	version := flags.String("version", "", "the instance's version")
	meta := flags.String("meta", "", "metadata, k=v,k=v")
	callers := flags.Int("callers", 1, "concurrent callers")
	duration := flags.Duration("for", 10*time.Second, "how long the client calls")
	enough := flags.Int("enough", 0, "stop after this many successful calls (0: run -for)")
	_ = flags.Parse(os.Args[2:])

	client, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		fail("etcd: %v", err)
	}
	registry := etcd.New(client)
	switch os.Args[1] {
	case "server":
		server := grpc.NewServer(grpc.Address(*listen))
		endpoint, err := server.Endpoint()
		if err != nil {
			fail("listen: %v", err)
		}
		server.RegisterService(&greeter.Desc, greeter.Greeter{Address: endpoint.Host})
		options := []kratos.Option{
			kratos.Name(*name),
			kratos.Version(*version),
			kratos.Server(server),
			kratos.Registrar(registry),
			kratos.Logger(log.NewFilter(log.DefaultLogger, log.FilterLevel(log.LevelWarn))),
		}
		if *id != "" {
			options = append(options, kratos.ID(*id))
		}
		if *meta != "" {
			metadata := map[string]string{}
			for _, pair := range strings.Split(*meta, ",") {
				k, v, _ := strings.Cut(pair, "=")
				metadata[k] = v
			}
			options = append(options, kratos.Metadata(metadata))
		}
		fmt.Printf("listening %s\n", endpoint.Host)
		if err := kratos.New(options...).Run(); err != nil {
			fail("run: %v", err)
		}
	case "client":
		conn, err := grpc.DialInsecure(context.Background(),
			grpc.WithEndpoint("discovery:///"+*name),
			grpc.WithDiscovery(registry),
			grpc.WithPrintDiscoveryDebugLog(false),
		)
		if err != nil {
			fail("dial: %v", err)
		}
		if !greeter.Load(conn, "kratos", *callers, *duration, *enough) {
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
