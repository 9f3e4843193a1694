package main

// The Greeter server: listens on loopback, registers itself in etcd under one lease in two
// layouts (jovian's, so jovian clients find it, and etcd's naming layout, so grpc-go's etcd
// resolver finds it), keeps the lease alive, prints "serving ADDRESS", and serves until
// stdin closes or a signal comes.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/naming/endpoints"
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
	server := grpc.NewServer()
	server.RegisterService(&greeterDesc, &greeter{address: address})
	go server.Serve(listener)

	etcd, err := clientv3.New(clientv3.Config{
		Endpoints:   strings.Split(*etcdEndpoints, ","),
		DialTimeout: 5 * time.Second,
	})
	if err != nil {
		return err
	}
	defer etcd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := etcd.Grant(ctx, *ttl)
	if err != nil {
		return fmt.Errorf("lease: %w", err)
	}
	keepAlive, err := etcd.KeepAlive(context.Background(), lease.ID)
	if err != nil {
		return fmt.Errorf("keep-alive: %w", err)
	}
	// Drained, or the client warns its queue is full; a closed channel means the lease is gone.
	go func() {
		for range keepAlive {
		}
	}()

	entry, err := json.Marshal(jovianEntry{Name: *service, Scheme: "grpc", Address: address, Weight: 100, Enable: true, Healthy: true, Kind: 1})
	if err != nil {
		return err
	}
	key := fmt.Sprintf("/%s/%s/providers/grpc://%s", *prefix, *service, address)
	if _, err := etcd.Put(ctx, key, string(entry), clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("jovian registration: %w", err)
	}
	manager, err := endpoints.NewManager(etcd, *target)
	if err != nil {
		return err
	}
	if err := manager.AddEndpoint(ctx, *target+"/"+address, endpoints.Endpoint{Addr: address}, clientv3.WithLease(lease.ID)); err != nil {
		return fmt.Errorf("naming registration: %w", err)
	}
	fmt.Println("serving", address)

	done := make(chan struct{}, 2)
	go func() {
		io.Copy(ioutil.Discard, os.Stdin) // returns when the bench closes stdin or dies
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
	revoke, cancelRevoke := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancelRevoke()
	etcd.Revoke(revoke, lease.ID)
	server.GracefulStop()
	return nil
}
