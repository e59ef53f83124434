//! Lambda wire models and the interfaces between Stratus's components.
//!
//! Data only: the JSON shapes of the Lambda API (requests, configuration
//! documents, error bodies), the Lambda error codes with their HTTP statuses
//! ([`error`]), and the traits through which the front end, counting service,
//! assignment service and workers talk ([`service`]). On one machine those
//! traits are implemented in-process; in a cluster the same traits get
//! network implementations (see `docs/design/cluster.md`). No I/O here.

pub mod error;
pub mod model;
pub mod service;

pub use error::{ErrorCode, LambdaError};
