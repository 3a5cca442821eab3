//! HTTP plumbing every router shares: the error answer and the query extractor.

pub mod error;

pub use error::{json_field, ApiError, ApiQuery};
