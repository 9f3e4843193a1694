// Command gopeer is jovian-bench's grpc-go peer: a Greeter server and a closed-loop Greeter
// load client built on grpc-go and etcd's own naming packages, so the bench can put jovian
// side by side with the stack it is measured against.
//
//	gopeer serve -etcd 127.0.0.1:2379 -service NAME -target TARGET
//	gopeer serve -unregistered
//	gopeer load  -etcd 127.0.0.1:2379 -target TARGET -servers 3
//
// go.mod pins today's grpc-go and etcd client; bench/src/gopeer.rs builds it from the Go module
// proxy into a cache outside the clone (as the interop tests build their Go programs) and runs
// it. Both modes speak to the bench in lines on stdout (and, for load, commands on stdin), and
// exit when stdin closes, so a bench that dies cannot leave them behind.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Println("error: usage: gopeer serve|load [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		// On stdout, where the bench reads: it shows the line when the peer did not start.
		fmt.Println("error:", strings.ReplaceAll(err.Error(), "\n", " "))
		os.Exit(1)
	}
}
