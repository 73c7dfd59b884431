package cluster

// BookingLock is the namespace (first int) of the two-int transaction-level
// advisory lock a booking takes on its cluster (second int: the cluster's id),
// so that one transaction books a cluster at a time. Each purpose has its own
// namespace so a session lock held for another purpose never collides with it.
const BookingLock int32 = 0x63750001

// OwnershipLock is the namespace of the locks that coordinate instances
// (package ownership): key 0 is the leader's session lock, key 1 the
// transaction lock that serialises registrations.
const OwnershipLock int32 = 0x63750002

// LivenessLock is the namespace of the session lock each live instance holds
// on its own id for as long as it lives, so that a peer blocked on that key
// learns of its end at once.
const LivenessLock int32 = 0x63750003
