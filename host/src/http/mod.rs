//! HTTP plumbing every router shares: the error answer, the query
//! extractor, and the accept loop with its limits.

pub mod error;
pub mod server;

pub use error::{json_field, ApiError, ApiQuery, ErrorBody};
