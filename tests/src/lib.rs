//! Cross-crate test support for portcullis: the plain reference model the
//! core is checked against, helpers that start real servers, and the
//! README's and the book's Rust snippets as doctests (this crate has every
//! dependency they use: `cargo test -p portcullis-tests --doc`).

pub mod firmware;
pub mod gen;
pub mod model;
pub mod public_api;
pub mod redis_server;

/// The README's and the book's Rust snippets, compiled and run as doctests.
/// `tests/tests/docs.rs` holds each README snippet equal to the example it
/// names, so a changed API path fails here and in `cargo build --examples`.
#[cfg(doctest)]
pub mod docs {
    #[doc = include_str!("../../README.md")]
    pub struct Readme;
    #[doc = include_str!("../../docs/library.md")]
    pub struct Library;
}
