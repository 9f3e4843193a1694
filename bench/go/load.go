package main

// The closed-loop load client: one grpc-go ClientConn on "etcd:///TARGET" with etcd's grpc
// resolver and the round_robin policy. It warms up until every expected server has answered,
// prints "ready", then for each "run IN_FLIGHT MILLIS" line on stdin runs IN_FLIGHT callers
// calling SayHello back to back for MILLIS ms and prints
// "result calls=N failed=N p50_ns=N p99_ns=N" (calls are the successful calls that finished);
// for each "rate PER_SECOND MILLIS" line it starts calls at that steady rate instead (open
// loop, each call's latency counted from when it was due, so a stall is not hidden by calls
// that were never sent) and prints the same line. It exits when stdin closes.

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	etcdresolver "go.etcd.io/etcd/client/v3/naming/resolver"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func load(args []string) error {
	flags := flag.NewFlagSet("load", flag.ContinueOnError)
	etcdEndpoints := flags.String("etcd", "127.0.0.1:2379", "etcd endpoints, comma-separated")
	target := flags.String("target", "greeter", "etcd naming target")
	servers := flags.Int("servers", 3, "servers to see answer before reporting ready")
	if err := flags.Parse(args); err != nil {
		return err
	}

	etcd, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcdEndpoints, ","), DialTimeout: 5 * time.Second})
	if err != nil {
		return err
	}
	defer etcd.Close()
	builder, err := etcdresolver.NewBuilder(etcd)
	if err != nil {
		return err
	}
	// Only what the scenario needs: etcd's resolver, plaintext and round_robin. The rest is
	// grpc-go's defaults (NewClient, not the deprecated Dial: today's way to make a client).
	conn, err := grpc.NewClient("etcd:///"+*target,
		grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(`{"loadBalancingPolicy":"round_robin"}`),
	)
	if err != nil {
		return err
	}
	defer conn.Close()

	if err := warmUp(conn, *servers); err != nil {
		return err
	}
	fmt.Println("ready")

	commands := bufio.NewScanner(os.Stdin)
	for commands.Scan() {
		var n, millis int
		var calls, failed int
		var latencies []time.Duration
		if _, err := fmt.Sscanf(commands.Text(), "run %d %d", &n, &millis); err == nil && n >= 1 && millis >= 1 {
			calls, failed, latencies = drive(conn, n, time.Duration(millis)*time.Millisecond)
		} else if _, err := fmt.Sscanf(commands.Text(), "rate %d %d", &n, &millis); err == nil && n >= 1 && millis >= 1 {
			calls, failed, latencies = atRate(conn, n, time.Duration(millis)*time.Millisecond)
		} else {
			return fmt.Errorf("bad command %q", commands.Text())
		}
		fmt.Printf("result calls=%d failed=%d p50_ns=%d p99_ns=%d\n", calls, failed, quantile(latencies, 0.5), quantile(latencies, 0.99))
	}
	return nil
}

// warmUp calls until `servers` distinct servers have answered (at most 10 s), so no
// measurement pays for resolving and connecting.
func warmUp(conn *grpc.ClientConn, servers int) error {
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	var lastErr error
	for len(seen) < servers {
		if time.Now().After(deadline) {
			return fmt.Errorf("saw %d of %d servers in 10 s (last error: %v)", len(seen), servers, lastErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		reply := new(helloReply)
		lastErr = conn.Invoke(ctx, sayHello, &helloRequest{Name: "warm-up"}, reply, grpc.WaitForReady(true))
		cancel()
		if lastErr == nil {
			if i := strings.LastIndex(reply.Message, " from "); i >= 0 {
				seen[reply.Message[i+len(" from "):]] = true
			}
		} else {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// drive runs inFlight callers until the deadline, like the bench's own closed loop: a call
// that started before the deadline counts when it finishes.
func drive(conn *grpc.ClientConn, inFlight int, duration time.Duration) (int, int, []time.Duration) {
	deadline := time.Now().Add(duration)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []time.Duration
	failed := 0
	for i := 0; i < inFlight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var latencies []time.Duration
			fails := 0
			request := &helloRequest{Name: "bench"}
			for time.Now().Before(deadline) {
				started := time.Now()
				if err := conn.Invoke(context.Background(), sayHello, request, new(helloReply)); err != nil {
					fails++
				} else {
					latencies = append(latencies, time.Since(started))
				}
			}
			mu.Lock()
			all = append(all, latencies...)
			failed += fails
			mu.Unlock()
		}()
	}
	wg.Wait()
	return len(all), failed, all
}

// atRate starts perSecond calls a second for duration, each in its own goroutine, and times
// each from when it was due.
func atRate(conn *grpc.ClientConn, perSecond int, duration time.Duration) (int, int, []time.Duration) {
	start := time.Now()
	total := int(int64(perSecond) * int64(duration) / int64(time.Second))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []time.Duration
	failed := 0
	request := &helloRequest{Name: "bench"}
	for i := 0; i < total; i++ {
		due := start.Add(time.Duration(int64(i) * int64(time.Second) / int64(perSecond)))
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := conn.Invoke(context.Background(), sayHello, request, new(helloReply))
			latency := time.Since(due)
			mu.Lock()
			if err != nil {
				failed++
			} else {
				all = append(all, latency)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return len(all), failed, all
}

// quantile is the nearest-rank q quantile in nanoseconds (0 for no samples), as the bench's.
func quantile(samples []time.Duration, q float64) int64 {
	if len(samples) == 0 {
		return 0
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	rank := int(math.Ceil(q * float64(len(samples))))
	if rank < 1 {
		rank = 1
	}
	if rank > len(samples) {
		rank = len(samples)
	}
	return int64(samples[rank-1])
}
