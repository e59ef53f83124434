//! stratus-sandbox-process (in progress).
