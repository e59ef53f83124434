//! stratus-assignment (in progress).
