//! Host agent: being written.
