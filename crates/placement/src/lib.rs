//! stratus-placement (in progress).
