//! stratus-api (in progress).
