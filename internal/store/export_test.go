package store

import (
	"context"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"
)

// CloseGate closes the gate of s's embedded member (as StopMember does
// first), waiting up to a second for the requests in progress.
func (s *Store) CloseGate() { s.server.closeGate(time.Second) }

// SetCampaignPoll sets how often a waiting candidate reads the election
// itself.
func (s *Store) SetCampaignPoll(d time.Duration) { s.campaignPoll = d }

// AwaitCampaign is awaitCampaign for a candidate of session sess whose
// etcd Campaign never returns (its watch hangs).
func (s *Store) AwaitCampaign(ctx context.Context, node string, sess *concurrency.Session) (string, int64, error) {
	return s.awaitCampaign(ctx, node, sess, make(chan error))
}
