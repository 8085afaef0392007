//! Sans-I/O health and load protocol: being written.
