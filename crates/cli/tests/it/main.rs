//! End-to-end tests: the real `opsgate` binary, started on a free port,
//! talking to local servers that count every call.

mod alertmanager;
mod audit;
mod execution;
mod harness;
mod intake;
mod postgres;
mod recovery;
