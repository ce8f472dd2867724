//! Redis fleet backend (in progress).
