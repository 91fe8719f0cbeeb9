//! End-to-end tests: the real `opsgate` binary, started on a free port,
//! talking to local servers that count every call.

mod alertmanager;
mod ansible;
mod audit;
mod auth;
mod caps;
mod chains;
mod event_time;
mod execution;
mod freeze;
mod freshservice;
mod gate;
mod harness;
mod holes;
mod hooks;
mod hostile;
mod intake;
mod jira;
mod links;
mod media_types;
mod one_run;
mod openapi;
mod policy;
mod postgres;
mod recheck;
mod recovery;
mod rollout;
mod secrets;
mod servicenow;
mod shadow;
mod slack;
mod teams;
mod time_bound;
mod timers;
mod urls;
mod writeback;
