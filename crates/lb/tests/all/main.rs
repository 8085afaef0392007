//! Integration tests of a load-balancing unit's health-cache role and admin
//! API, in process on loopback ephemeral ports, fed by real host-side
//! protocol machines (`switchyard_health::HostProtocol`) over real UDP
//! sockets. One test binary; every test starts its own unit.

mod harness;

mod acts;
mod admin_api;
mod admin_auth;
mod allotments;
mod hostile_input;
mod hosts;
mod json_schema;
mod metrics;
mod openapi;
mod trust;
