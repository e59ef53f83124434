//! stratus-code (in progress).
