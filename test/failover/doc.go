// Package failover proves Haven's failover on a real cluster: three test-bed
// hosts (network namespaces, internal/testbed), one `haven agent` each with
// the QEMU driver, real test guests (internal/testguest) on shared storage,
// real fencing through fence_testbed, and the double-run checker watching
// every guest's disk. The tests pull plugs, cut networks, split the
// cluster and kill agents, then check through the API and on the disks that
// every guest runs again, never twice, and goes home by live migration.
//
// Run as root: go test ./test/failover/ (add -failover.rounds=50 for the long
// random run). The benchmark BenchmarkHostPowerLoss measures detection,
// fencing and recovery times (scripts/bench-failover.sh).
package failover
