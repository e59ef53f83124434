//! stratus-store-embedded (in progress).
