//! stratus-worker (in progress).
