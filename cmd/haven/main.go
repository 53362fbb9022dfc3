// Command haven is the one binary of Haven: the per-host agent, the operator
// CLI and the simulator. See README.md.
package main

import (
	"os"

	"github.com/haven-ha/haven/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
