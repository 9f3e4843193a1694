package main

// The Greeter server: a default grpc-go server on loopback. Registered, it puts itself in etcd
// under one lease in two layouts (jovian's, so jovian clients find it, and etcd's naming
// layout, so grpc-go's etcd resolver finds it) and keeps the lease alive; with -unregistered
// it only serves (scenario 9 sends it load straight from h2load). Either way it prints
// "serving ADDRESS" and serves until stdin closes or a signal comes.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/naming/endpoints"
	"google.golang.org/grpc"
)

// jovianEntry is the part of jovian's ServiceInfo JSON a client needs; the rest defaults.
type jovianEntry struct {
	Name    string `json:"name"`
	Scheme  string `json:"scheme"`
	Address string `json:"address"`
	Weight  int    `json:"weight"`
	Enable  bool   `json:"enable"`
	Healthy bool   `json:"healthy"`
	Kind    int    `json:"kind"`
}

func serve(args []string) error {
	flags := flag.NewFlagSet("serve", flag.ContinueOnError)
	etcdEndpoints := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	unregistered := flags.Bool("unregistered", false, "serve without registering in etcd")
	service := flags.String("service", "greeter", "jovian service name")
	prefix := flags.String("prefix", "jovian", "jovian key prefix")
	target := flags.String("target", "greeter", "etcd naming target")
	ttl := flags.Int64("ttl", 10, "lease TTL in seconds")
	if err := flags.Parse(args); err != nil {
		return err
	}

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	address := listener.Addr().String()
	// No options: grpc-go's default server is the one measured.
	server := grpc.NewServer()
	server.RegisterService(&greeterDesc, &greeter{address: address})
	go server.Serve(listener)

	deregister := func() {}
	if !*unregistered {
		if deregister, err = register(*etcdEndpoints, *service, *prefix, *target, *ttl, address); err != nil {
			return err
		}
	}
	fmt.Println("serving", address)

	done := make(chan struct{}, 2)
	go func() {
		io.Copy(io.Discard, os.Stdin) // returns when the bench closes stdin or dies
		done <- struct{}{}
	}()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-signals
		done <- struct{}{}
	}()
	<-done

	// Deregister first so clients stop picking this instance, then finish what is in flight.
	deregister()
	server.GracefulStop()
	return nil
}

// register puts address in etcd under a lease it keeps alive, and returns what revokes it.
func register(etcdEndpoints, service, prefix, target string, ttl int64, address string) (func(), error) {
	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(etcdEndpoints, ","),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := etcd.Grant(ctx, ttl)
	if err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	keepAlive, err := etcd.KeepAlive(context.Background(), lease.ID)
	if err != nil {
		return nil, fmt.Errorf("keep-alive: %w", err)
	}
	// Drained, or the client warns its queue is full; a closed channel means the lease is gone.
	go func() {
		for range keepAlive {
		}
	}()

	entry, err := json.Marshal(jovianEntry{Name: service, Scheme: "grpc", Address: address, Weight: 100, Enable: true, Healthy: true, Kind: 1})
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("/%s/%s/providers/grpc://%s", prefix, service, address)
	if _, err := etcd.Put(ctx, key, string(entry), clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("jovian registration: %w", err)
	}
	manager, err := endpoints.NewManager(etcd, target)
	if err != nil {
		return nil, err
	}
	if err := manager.AddEndpoint(ctx, target+"/"+address, endpoints.Endpoint{Addr: address}, clientv3.WithLease(lease.ID)); err != nil {
		return nil, fmt.Errorf("naming registration: %w", err)
	}
	return func() {
		revoke, cancelRevoke := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancelRevoke()
		etcd.Revoke(revoke, lease.ID)
		etcd.Close()
	}, nil
}
