//! stratus-frontend (in progress).
