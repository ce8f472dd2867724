//! portcullis host runtime (work in progress).
#![forbid(unsafe_code)]

pub mod fleet;
