package dispatch

import (
	"errors"

	"github.com/jackc/pgx/v5"
)

// ErrFenced means this instance no longer owns the cluster it tried to book:
// another instance took it over. Nothing was written; stop booking it.
var ErrFenced = errors.New("fenced: this instance no longer owns the cluster")

// Fence proves, inside a booking transaction, that this instance still owns
// the cluster (DESIGN.md: fencing). Queue adds its statements to the
// transaction's first batch, right after the cluster's booking lock, so the
// proof costs no round trip of its own; a failed proof is an error wrapping
// ErrFenced from a result handler it sets on its queued query.
type Fence interface {
	Queue(b *pgx.Batch, clusterID int32)
}

// singleOwner is the fence of a deployment with one instance, which owns
// every cluster: it queues nothing and always passes.
type singleOwner struct{}

// Queue implements Fence.
func (singleOwner) Queue(*pgx.Batch, int32) {}
