package queue

// FramesQuery is the waiting frames' read, for tests of its plan.
const FramesQuery = framesQuery
