//! Integration tests of the connectors, against loopback servers from
//! `test-support` that speak the vendors' wire formats.

mod ansible;
mod graph;
mod servicenow;
mod slack;
mod teams;
