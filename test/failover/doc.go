// Package failover proves Haven's failover on a real cluster: three test-bed
// hosts (network namespaces, internal/testbed), one `haven agent` each, real
// test guests (internal/testguest) on shared storage, real fencing through
// fence_testbed, and the double-run checker watching every guest's disk. The
// tests pull plugs, cut networks, split the cluster and kill agents, then
// check through the API and on the disks that every guest runs again, never
// twice, and goes home by live migration.
//
// Every test runs once per driver (subtests qemu and libvirt): with the QEMU
// driver, and with libvirt, where each host boots a libvirtd of its own
// before its agent and the random faults also crash libvirtd.
//
// The isolation tests (a switch outage and a 2/1 partition under
// quorum_loss freeze, two hosts and a witness) and TestNoFalseAlarm (a 1 s
// network outage, a store leader change, agent kill -9 and restart, an
// upgrade; saturated CPUs with -failover.stress=10m) run with the first
// driver only: what they check is the cluster's.
//
// Run as root: go test ./test/failover/ (add -failover.rounds=50 for the long
// random run, -failover.hypervisors=libvirt for one driver only). The
// benchmarks BenchmarkHostPowerLoss, BenchmarkPartition, BenchmarkGuestCrash
// and BenchmarkLiveMigration measure detection, fencing and recovery times
// (scripts/bench-failover.sh runs them, with Pacemaker's bench for ratios).
package failover
