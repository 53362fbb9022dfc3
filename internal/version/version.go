// Package version holds the version of the haven binary. Release builds set
// Version with -ldflags "-X github.com/haven-ha/haven/internal/version.Version=...".
package version

// Version is this build's version.
var Version = "0.1.0-dev"
