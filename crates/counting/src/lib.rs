//! stratus-counting (in progress).
