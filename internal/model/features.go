package model

import (
	"slices"
	"strconv"
)

// Cluster features. An agent reports the newest feature level its build
// has (NodeFacts.FeatureLevel); a feature that needs every host (both ends
// of a live migration, say) is used only once every online host reports
// at least its level (ClusterFeatures). Levels only grow: a build has every
// feature up to its level. Agents older than feature levels report none:
// level 0.
const (
	// FeatureMigrationTLS: QEMU live migration over TLS with the cluster's
	// certificates. A source of level 0 migrates over plain TCP only, so a
	// target must not listen with TLS unless the source can speak it.
	FeatureMigrationTLS = 1

	// FeatureStoreRoles: the agent administers the embedded store as its
	// root user (joins, promotions, node removal, backups), which it must
	// once the store enforces its roles. The manager turns them on in an
	// existing cluster only once every online host has this level.
	FeatureStoreRoles = 2

	// FeatureLevel is this build's level: the newest feature above.
	FeatureLevel = FeatureStoreRoles
)

// SealedSecretsLevel is the lowest level whose builds open the values the
// store keeps sealed with the cluster secret key (store/keyring.go).
// Sealing came before feature levels, so every build that reports a level
// has it; a host of level 0 may run a release before it (such as 235b719),
// which reads the fence configuration only in the clear (see
// store/oldreleases.go).
const SealedSecretsLevel = FeatureMigrationTLS

// FeatureNames names each level's feature, for status and the docs.
var FeatureNames = map[int]string{
	FeatureMigrationTLS: "migration-tls",
	FeatureStoreRoles:   "store-roles",
}

// Features is the cluster's feature level: what every online host has.
type Features struct {
	// Level is the lowest level an online host reports (0 with no host).
	Level int `json:"level"`
	// Newest is the highest level an online host reports.
	Newest int `json:"newest"`
	// Waiting names the features some host has that wait for the others.
	Waiting []string `json:"waiting,omitempty"`
	// Behind lists the hosts below Newest, the ones the waiting features
	// wait for (upgrade them).
	Behind []string `json:"behind,omitempty"`
}

// Has reports whether every online host has the feature of level f.
func (c Features) Has(f int) bool { return c.Level >= f }

// ClusterFeatures is the feature level of the hosts whose facts are given
// (the online ones).
func ClusterFeatures(hosts []NodeFacts) Features {
	var c Features
	for i, h := range hosts {
		if i == 0 || h.FeatureLevel < c.Level {
			c.Level = h.FeatureLevel
		}
		c.Newest = max(c.Newest, h.FeatureLevel)
	}
	for _, h := range hosts {
		if h.FeatureLevel < c.Newest {
			c.Behind = append(c.Behind, h.Name)
		}
	}
	slices.Sort(c.Behind)
	for l := c.Level + 1; l <= c.Newest; l++ {
		name := FeatureNames[l]
		if name == "" {
			name = "level " + strconv.Itoa(l) // a newer build's feature this one cannot name
		}
		c.Waiting = append(c.Waiting, name)
	}
	return c
}
