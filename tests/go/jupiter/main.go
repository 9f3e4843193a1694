// A peer for jovian's tests built on Go jupiter's current release (v0.11.21), using jupiter's
// own pieces: its gRPC server (xgrpc), its etcdv3 registry, its gRPC client and etcd resolver,
// configured as a jupiter App configures them (a TOML config under `jupiter.`).
//
// Since v0.6 jupiter writes `grpc:{name}:v1:{mode}/{addr}` → `{"Op":0,"Addr":...,"MetadataX":
// {ServiceInfo}}` with no prefix, and its client dials `etcd:///grpc:{name}:v1:{mode}`.
//
//	jupiter server -etcd 127.0.0.1:2379 -name greeter
//	    serves helloworld.Greeter on 127.0.0.1, registers it, prints "serving ADDR", and on
//	    SIGTERM unregisters and stops. SayHello replies "ADDR go".
//	jupiter client -etcd 127.0.0.1:2379 -name greeter [-calls N] [-interval D] [-authority A]
//	    resolves the service through jupiter's registry and calls SayHello N times (0: until
//	    killed), printing "ok MESSAGE" or "err CODE MESSAGE" for each call.
//
// The mode is jupiter's (`JUPITER_MODE`, else "unknown-mode").
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"
	"github.com/douyu/jupiter/pkg"
	grpcclient "github.com/douyu/jupiter/pkg/client/grpc"
	"github.com/douyu/jupiter/pkg/conf"
	"github.com/douyu/jupiter/pkg/core/constant"
	"github.com/douyu/jupiter/pkg/registry/etcdv3"
	"github.com/douyu/jupiter/pkg/server/xgrpc"
	"google.golang.org/grpc"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: jupiter server|client [flags]")
		os.Exit(2)
	}
	flags := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoints := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma separated")
	name := flags.String("name", "greeter", "the service name")
	calls := flags.Int("calls", 1, "client: calls to make, 0 for until killed")
	interval := flags.Duration("interval", 0, "client: pause between calls")
	authority := flags.String("authority", "", "client: the :authority to send (grpc.WithAuthority)")
	flags.Parse(os.Args[2:])

	config := fmt.Sprintf("[jupiter.registry.default]\nendpoints = [\"%s\"]\nserviceTTL = \"10s\"\n",
		strings.Join(strings.Split(*endpoints, ","), `", "`))
	if err := conf.LoadFromReader(strings.NewReader(config), toml.Unmarshal); err != nil {
		fmt.Println("config:", err)
		os.Exit(1)
	}
	registryKey := constant.ConfigKey("registry.default")

	switch os.Args[1] {
	case "server":
		pkg.SetName(*name)
		registry := etcdv3.RawConfig(registryKey).MustBuild()
		config := xgrpc.DefaultConfig()
		config.Host = "127.0.0.1"
		config.Port = 0
		server := config.MustBuild()
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
		config := grpcclient.DefaultConfig()
		config.RegistryConfig = registryKey
		// One log line a call is noise at the thousands of calls the tests make.
		config.DisableAccessInterceptor = true
		config.Addr = fmt.Sprintf("etcd:///grpc:%s:v1:%s", *name, pkg.AppMode())
		if *authority != "" {
			// Else grpc-go sends the resolver's ServerName, "grpc:{name}:v1:{mode}/", which is
			// no valid :authority: servers on Rust's h2 (tonic, jovian) refuse the call.
			config.WithDialOption(grpc.WithAuthority(*authority))
		}
		conn, err := config.Build()
		if err != nil {
			fmt.Println("dial:", err)
		}
		run(conn, *calls, *interval)
	default:
		fmt.Fprintln(os.Stderr, "usage: jupiter server|client [flags]")
		os.Exit(2)
	}
}
