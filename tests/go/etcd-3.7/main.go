// etcd v3.7.4, built from its Go module (go.mod pins it) so the etcd-facing tests can run
// against the etcd users run: see tests/src/etcd.rs and docs/etcd.md.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
