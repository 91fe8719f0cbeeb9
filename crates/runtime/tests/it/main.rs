//! The runtime on its own: a real store on a temporary SQLite file, real
//! runbooks, and the seam's parts played by fakes that record what they
//! are told — so that what the runtime decides to tell a ticket or a chat
//! channel, and when, is checked without any vendor behind it.

mod fakes;
mod transactions;
mod triage;
mod writeback;
